//! A campaign's progress as one stacked bar: acknowledged, read, sent, missed and failed out of
//! all deliveries, drawn as SVG (widths are attributes, so the strict CSP, which forbids inline
//! styles, does not get in the way).

use serde::Deserialize;

/// The API's `counts` object: exclusive buckets that add up to the campaign's deliveries.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(default)]
pub struct Counts {
    pub pending: u64,
    pub sent: u64,
    pub read: u64,
    pub acknowledged: u64,
    pub missed: u64,
    pub failed: u64,
}

/// The bar's segments in the order drawn, with the CSS class that colours each.
type Segment = (&'static str, fn(&Counts) -> u64);

const SEGMENTS: [Segment; 5] = [
    ("acknowledged", |c| c.acknowledged),
    ("read", |c| c.read),
    ("sent", |c| c.sent),
    ("missed", |c| c.missed),
    ("failed", |c| c.failed),
];

impl Counts {
    pub fn total(&self) -> u64 {
        self.pending + self.sent + self.read + self.acknowledged + self.missed + self.failed
    }

    /// Acknowledged as a whole percentage of all deliveries (0 when there are none).
    pub fn acknowledged_percent(&self) -> u64 {
        (self.acknowledged * 100)
            .checked_div(self.total())
            .unwrap_or(0)
    }

    /// The bar as an inline SVG element; only numbers and fixed words go into it.
    pub fn bar(&self) -> String {
        let total = self.total();
        let mut x = 0.0;
        let mut rects = String::new();
        for (class, count) in SEGMENTS {
            let count = count(self);
            if count == 0 || total == 0 {
                continue;
            }
            let width = count as f64 * 100.0 / total as f64;
            rects.push_str(&format!(
                r#"<rect class="seg-{class}" x="{x:.3}" y="0" width="{width:.3}" height="10"><title>{count} {class}</title></rect>"#
            ));
            x += width;
        }
        format!(
            r#"<svg class="progress" viewBox="0 0 100 10" preserveAspectRatio="none" role="img" aria-label="{} of {total} acknowledged"><rect class="seg-track" x="0" y="0" width="100" height="10"/>{rects}</svg>"#,
            self.acknowledged
        )
    }

    /// The legend under a bar: "3 acknowledged · 1 read · …", leaving out empty buckets.
    pub fn legend(&self) -> Vec<(&'static str, u64)> {
        let mut parts: Vec<(&'static str, u64)> = SEGMENTS
            .iter()
            .map(|(class, count)| (*class, count(self)))
            .collect();
        parts.push(("pending", self.pending));
        parts.retain(|(_, n)| *n > 0);
        parts
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bar_has_one_segment_per_non_empty_bucket_sized_by_share() {
        let counts = Counts {
            acknowledged: 1,
            sent: 2,
            failed: 1,
            ..Counts::default()
        };
        let bar = counts.bar();
        assert!(bar.contains(r#"class="seg-acknowledged" x="0.000" y="0" width="25.000""#));
        assert!(bar.contains(r#"class="seg-sent" x="25.000" y="0" width="50.000""#));
        assert!(bar.contains(r#"class="seg-failed" x="75.000" y="0" width="25.000""#));
        assert!(!bar.contains("seg-read"));
        assert!(bar.contains("1 of 4 acknowledged"));
        assert_eq!(counts.acknowledged_percent(), 25);
        assert_eq!(
            counts.legend(),
            vec![("acknowledged", 1), ("sent", 2), ("failed", 1)]
        );
    }

    #[test]
    fn an_empty_campaign_draws_only_the_track() {
        let bar = Counts::default().bar();
        assert!(bar.contains("seg-track"));
        assert!(!bar.contains("seg-acknowledged"));
        assert_eq!(Counts::default().acknowledged_percent(), 0);
    }
}
