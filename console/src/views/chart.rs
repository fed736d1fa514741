//! Acknowledgements over time, drawn on the server as an inline SVG: a cumulative line over an
//! area, from the campaign's start to its end (or now), with time and count labels. Coordinates
//! are attributes, so the strict CSP (no inline styles) does not get in the way; colours come
//! from the `svg.chart` classes in the console's stylesheet.

use chrono::{DateTime, TimeDelta, Utc};

/// How many time buckets the span is cut into: enough for a smooth curve, few enough points.
pub const BUCKETS: usize = 30;

const WIDTH: f64 = 600.0;
const HEIGHT: f64 = 200.0;
/// Room for the count labels on the left and the time labels below.
const LEFT: f64 = 44.0;
const RIGHT: f64 = 12.0;
const TOP: f64 = 12.0;
const BOTTOM: f64 = 26.0;

/// Cumulative counts at the end of each of `buckets` equal slices of `start..end`: entry `i` is
/// how many of `times` fall at or before the end of slice `i`. A time before `start` counts in
/// the first slice and one after `end` in the last (clocks and "now" never agree exactly), so
/// the last entry is always `times.len()`. An empty or backwards span is widened to a second.
pub fn cumulative(
    times: &[DateTime<Utc>],
    start: DateTime<Utc>,
    end: DateTime<Utc>,
    buckets: usize,
) -> Vec<u64> {
    let buckets = buckets.max(1);
    let span = span_millis(start, end);
    let mut per_bucket = vec![0u64; buckets];
    for time in times {
        let offset = (*time - start).num_milliseconds().clamp(0, span);
        // The bucket whose slice holds the offset; the very end belongs to the last slice.
        let index = ((offset as i128 * buckets as i128) / span as i128) as usize;
        per_bucket[index.min(buckets - 1)] += 1;
    }
    let mut running = 0;
    per_bucket
        .into_iter()
        .map(|n| {
            running += n;
            running
        })
        .collect()
}

fn span_millis(start: DateTime<Utc>, end: DateTime<Utc>) -> i64 {
    (end - start).num_milliseconds().max(1000)
}

/// What the chart shows: acknowledgement times between `start` and `end`. When only a sample
/// of them was read (`total` more than the times given), every count is scaled up to `total`,
/// which is an estimate of the curve's shape with its true end point.
pub struct AckChart<'a> {
    pub times: &'a [DateTime<Utc>],
    pub total: u64,
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
}

impl AckChart<'_> {
    /// The chart as `<svg id="ack-chart" class="chart">`; only numbers and formatted times go
    /// into it.
    pub fn draw(&self) -> String {
        let plot_w = WIDTH - LEFT - RIGHT;
        let plot_h = HEIGHT - TOP - BOTTOM;
        let base = TOP + plot_h;
        let counts = cumulative(self.times, self.start, self.end, BUCKETS);
        let sampled = self.times.len() as u64;
        let scale = if sampled > 0 && self.total > sampled {
            self.total as f64 / sampled as f64
        } else {
            1.0
        };
        let top_value = nice_ceiling((sampled as f64 * scale).round() as u64);
        let x = |i: usize| LEFT + plot_w * i as f64 / BUCKETS as f64;
        let y = |n: u64| base - plot_h * (n as f64 * scale) / top_value as f64;

        let mut svg = format!(
            r#"<svg id="ack-chart" class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-label="{} acknowledgements over time">"#,
            self.total
        );
        // Horizontal grid lines with their counts: zero, half and the top.
        for value in [0, top_value / 2, top_value] {
            let gy = base - plot_h * value as f64 / top_value as f64;
            svg.push_str(&format!(
                r#"<line class="axis" x1="{LEFT}" y1="{gy:.1}" x2="{:.1}" y2="{gy:.1}"/><text class="y-label" x="{:.1}" y="{:.1}" text-anchor="end">{value}</text>"#,
                WIDTH - RIGHT,
                LEFT - 6.0,
                gy + 4.0
            ));
        }
        // Time labels: start, middle and end.
        let span = TimeDelta::milliseconds(span_millis(self.start, self.end));
        let format = if span > TimeDelta::hours(20) {
            "%-d %b %H:%M"
        } else if span > TimeDelta::minutes(10) {
            "%H:%M"
        } else {
            "%H:%M:%S"
        };
        for (i, anchor) in [(0, "start"), (BUCKETS / 2, "middle"), (BUCKETS, "end")] {
            let at = self.start + span * i as i32 / BUCKETS as i32;
            svg.push_str(&format!(
                r#"<text class="x-label" x="{:.1}" y="{:.1}" text-anchor="{anchor}">{}</text>"#,
                x(i),
                HEIGHT - 8.0,
                at.format(format)
            ));
        }
        if sampled == 0 {
            svg.push_str(&format!(
                r#"<text class="chart-empty" x="{:.1}" y="{:.1}" text-anchor="middle">No acknowledgements yet</text></svg>"#,
                LEFT + plot_w / 2.0,
                TOP + plot_h / 2.0
            ));
            return svg;
        }
        let mut line = format!("M{:.1},{:.1}", x(0), y(0));
        for (i, n) in counts.iter().enumerate() {
            line.push_str(&format!(" L{:.1},{:.1}", x(i + 1), y(*n)));
        }
        svg.push_str(&format!(
            r#"<path class="area" d="{line} L{:.1},{base:.1} Z"/><path class="line" d="{line}"/>"#,
            x(BUCKETS)
        ));
        svg.push_str("</svg>");
        svg
    }
}

/// The axis's top: the next of 1, 2, 5 × 10ⁿ at or above `n`, so the half-way label is round.
fn nice_ceiling(n: u64) -> u64 {
    let mut magnitude = 1u64;
    loop {
        for step in [1, 2, 5] {
            let candidate = step * magnitude;
            if candidate >= n.max(2) {
                return candidate;
            }
        }
        magnitude = magnitude.saturating_mul(10);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(seconds: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + seconds, 0).unwrap()
    }

    #[test]
    fn each_time_counts_in_its_slice_and_every_slice_after() {
        // 100 s in 10 slices of 10 s: 5 s is in slice 0, 10 s starts slice 1, 95 s is in 9.
        let counts = cumulative(&[at(5), at(10), at(12), at(95)], at(0), at(100), 10);
        assert_eq!(counts, vec![1, 3, 3, 3, 3, 3, 3, 3, 3, 4]);
    }

    #[test]
    fn times_outside_the_span_count_at_its_edges() {
        let counts = cumulative(&[at(-30), at(100), at(500)], at(0), at(100), 4);
        assert_eq!(counts, vec![1, 1, 1, 3]);
    }

    #[test]
    fn an_empty_span_still_has_its_buckets_and_counts_everything() {
        let counts = cumulative(&[at(0), at(0)], at(0), at(0), BUCKETS);
        assert_eq!(counts.len(), BUCKETS);
        assert_eq!(counts.last(), Some(&2));
        assert!(cumulative(&[], at(0), at(60), 3).iter().all(|n| *n == 0));
    }

    #[test]
    fn the_axis_top_is_a_round_number_at_or_above_the_count() {
        assert_eq!(nice_ceiling(0), 2);
        assert_eq!(nice_ceiling(3), 5);
        assert_eq!(nice_ceiling(10), 10);
        assert_eq!(nice_ceiling(11), 20);
        assert_eq!(nice_ceiling(4_900), 5_000);
    }

    #[test]
    fn the_chart_ends_at_the_total_even_from_a_sample() {
        let times = [at(10), at(20)];
        let chart = AckChart {
            times: &times,
            total: 10,
            start: at(0),
            end: at(60),
        };
        let svg = chart.draw();
        assert!(svg.starts_with(r#"<svg id="ack-chart" class="chart""#));
        assert!(svg.contains(r#"class="line""#) && svg.contains(r#"class="area""#));
        // Two sampled of ten: scaled ×5, so the line ends at the top label, 10, at y = TOP.
        assert!(svg.contains(">10</text>"));
        assert!(svg.contains(&format!(" L{:.1},{:.1}\"", WIDTH - RIGHT, TOP)));
    }

    #[test]
    fn a_chart_without_acknowledgements_says_so() {
        let chart = AckChart {
            times: &[],
            total: 0,
            start: at(0),
            end: at(60),
        };
        let svg = chart.draw();
        assert!(svg.contains("No acknowledgements yet"));
        assert!(!svg.contains(r#"class="line""#));
    }
}
