//! `pidgr campaign status ID [--follow]`: a campaign's status, current step and counts, read
//! from the database (scoped by organisation like every query), for an operator at a shell.
//!
//! On a terminal the line carries a progress bar drawn with plain characters and is redrawn in
//! place (`\r`); piped or redirected, each change is one plain line, so a log or a script reads
//! it without control characters. `--follow` polls once a second until the campaign is
//! COMPLETED or CANCELLED.

use std::io::Write;
use std::time::Duration;

use pidgr_store::{Campaign, CampaignStatus, DeliveryCounts, Store, counted};
use pidgr_workflows::definition::Definition;

/// Characters of the progress bar between its brackets.
const BAR_WIDTH: usize = 30;
/// How often `--follow` reads the campaign again.
const POLL_EVERY: Duration = Duration::from_secs(1);

/// What one reading of the campaign shows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Snapshot {
    pub name: String,
    pub status: CampaignStatus,
    /// The step running now and its type (`wait (DEADLINE_CHECK)`), while the campaign is ACTIVE.
    pub step: Option<(String, Option<&'static str>)>,
    /// Recipients counted at the start; the workflow writes their deliveries in pages, so the
    /// counts may add up to fewer for a while.
    pub recipients: u64,
    pub counts: DeliveryCounts,
}

impl Snapshot {
    fn of(campaign: &Campaign, counts: DeliveryCounts) -> Snapshot {
        let definition: Option<Definition> = serde_json::from_str(&campaign.definition).ok();
        let step = campaign.current_step.as_ref().map(|id| {
            let kind = definition
                .as_ref()
                .and_then(|d| d.step(id))
                .map(|s| s.kind.type_name());
            (id.clone(), kind)
        });
        let recipients = campaign
            .recipient_count
            .map_or(0, |n| n.max(0) as u64)
            .max(counts.total());
        Snapshot {
            name: campaign.name.clone(),
            status: campaign.status,
            step,
            recipients,
            counts,
        }
    }

    /// Deliveries that need nothing more: acknowledged, missed or failed.
    fn resolved(&self) -> u64 {
        self.counts.acknowledged + self.counts.missed + self.counts.failed
    }

    /// Whether nothing will change any more.
    pub fn finished(&self) -> bool {
        matches!(
            self.status,
            CampaignStatus::Completed | CampaignStatus::Cancelled
        )
    }
}

/// The plain line: `Q1 update: ACTIVE, step wait (DEADLINE_CHECK); 4 recipients: 2
/// acknowledged, 1 read, 1 sent, 0 pending, 0 missed, 0 failed`.
pub fn render_line(snapshot: &Snapshot) -> String {
    let c = &snapshot.counts;
    let step = match &snapshot.step {
        Some((id, Some(kind))) => format!(", step {id} ({kind})"),
        Some((id, None)) => format!(", step {id}"),
        None => String::new(),
    };
    format!(
        "{}: {}{step}; {}: {} acknowledged, {} read, {} sent, {} pending, {} missed, {} failed",
        snapshot.name,
        snapshot.status.as_str(),
        counted(snapshot.recipients, "recipient", "recipients"),
        c.acknowledged,
        c.read,
        c.sent,
        c.pending,
        c.missed,
        c.failed
    )
}

/// The bar of resolved deliveries out of all recipients: `[#########.........]  50%`.
pub fn render_bar(snapshot: &Snapshot, width: usize) -> String {
    let (done, total) = (snapshot.resolved(), snapshot.recipients);
    let fraction = if total == 0 {
        if snapshot.finished() { 1.0 } else { 0.0 }
    } else {
        (done as f64 / total as f64).min(1.0)
    };
    let filled = ((fraction * width as f64).floor() as usize).min(width);
    format!(
        "[{}{}] {:>3}%",
        "#".repeat(filled),
        ".".repeat(width - filled),
        (fraction * 100.0).floor() as u64
    )
}

/// Writes snapshots as they change: on a terminal one line redrawn in place with its bar,
/// otherwise a plain line per change.
pub struct Display<W: Write> {
    out: W,
    terminal: bool,
    last: Option<String>,
    /// Characters of the line drawn last, to blank what a shorter one leaves behind.
    drawn: usize,
}

impl<W: Write> Display<W> {
    pub fn new(out: W, terminal: bool) -> Self {
        Display {
            out,
            terminal,
            last: None,
            drawn: 0,
        }
    }

    pub fn show(&mut self, snapshot: &Snapshot) -> std::io::Result<()> {
        let line = render_line(snapshot);
        if self.last.as_deref() == Some(line.as_str()) {
            return Ok(());
        }
        if self.terminal {
            let text = format!("{} {line}", render_bar(snapshot, BAR_WIDTH));
            let width = text.chars().count();
            let blank = " ".repeat(self.drawn.saturating_sub(width));
            write!(self.out, "\r{text}{blank}")?;
            self.drawn = width;
        } else {
            writeln!(self.out, "{line}")?;
        }
        self.out.flush()?;
        self.last = Some(line);
        Ok(())
    }

    /// Ends the line redrawn in place (a terminal's prompt then starts on its own line).
    pub fn finish(&mut self) -> std::io::Result<()> {
        if self.terminal && self.last.is_some() {
            writeln!(self.out)?;
            self.out.flush()?;
        }
        Ok(())
    }
}

/// Reads the campaign once.
pub async fn snapshot(store: &Store, org_id: &str, campaign_id: &str) -> anyhow::Result<Snapshot> {
    let campaign = match store.get_campaign(org_id, campaign_id).await {
        Ok(campaign) => campaign,
        Err(pidgr_store::StoreError::NotFound) => {
            anyhow::bail!("the organisation has no campaign {campaign_id:?}")
        }
        Err(error) => return Err(error.into()),
    };
    let counts = store.delivery_counts(org_id, campaign_id).await?;
    Ok(Snapshot::of(&campaign, counts))
}

/// Shows the campaign; with `follow`, again each second as it changes until it is COMPLETED or
/// CANCELLED. Answers the last snapshot.
pub async fn show<W: Write>(
    store: &Store,
    org_id: &str,
    campaign_id: &str,
    follow: bool,
    display: &mut Display<W>,
) -> anyhow::Result<Snapshot> {
    loop {
        let now = snapshot(store, org_id, campaign_id).await?;
        display.show(&now)?;
        if !follow || now.finished() {
            display.finish()?;
            return Ok(now);
        }
        tokio::time::sleep(POLL_EVERY).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snapshot(status: CampaignStatus, counts: DeliveryCounts) -> Snapshot {
        Snapshot {
            name: "Q1 update".into(),
            status,
            step: Some(("wait".into(), Some("DEADLINE_CHECK"))),
            recipients: counts.total(),
            counts,
        }
    }

    fn waiting() -> Snapshot {
        snapshot(
            CampaignStatus::Active,
            DeliveryCounts {
                acknowledged: 2,
                read: 1,
                sent: 1,
                ..Default::default()
            },
        )
    }

    #[test]
    fn a_line_says_status_step_and_counts() {
        assert_eq!(
            render_line(&waiting()),
            "Q1 update: ACTIVE, step wait (DEADLINE_CHECK); 4 recipients: 2 acknowledged, \
             1 read, 1 sent, 0 pending, 0 missed, 0 failed"
        );
        let mut one = waiting();
        one.counts = DeliveryCounts {
            acknowledged: 1,
            ..Default::default()
        };
        one.recipients = 1;
        one.step = None;
        one.status = CampaignStatus::Completed;
        assert!(
            render_line(&one).starts_with("Q1 update: COMPLETED; 1 recipient: 1 acknowledged"),
            "{}",
            render_line(&one)
        );
    }

    #[test]
    fn the_bar_fills_with_resolved_deliveries() {
        assert_eq!(render_bar(&waiting(), 10), "[#####.....]  50%");
        let done = snapshot(
            CampaignStatus::Completed,
            DeliveryCounts {
                acknowledged: 3,
                missed: 1,
                ..Default::default()
            },
        );
        assert_eq!(render_bar(&done, 10), "[##########] 100%");
        let mut empty = waiting();
        empty.counts = DeliveryCounts::default();
        empty.recipients = 0;
        assert_eq!(render_bar(&empty, 4), "[....]   0%");
    }

    #[test]
    fn a_terminal_redraws_one_line_in_place() {
        let mut out = Vec::new();
        let mut display = Display::new(&mut out, true);
        let mut now = waiting();
        display.show(&now).unwrap();
        display.show(&now).unwrap(); // unchanged: not drawn again
        now.counts.read = 0;
        now.counts.acknowledged = 3;
        display.show(&now).unwrap();
        display.finish().unwrap();
        let text = String::from_utf8(out).unwrap();
        assert_eq!(text.matches('\r').count(), 2, "{text:?}");
        assert_eq!(text.matches('\n').count(), 1, "{text:?}");
        assert!(text.ends_with("0 failed\n"), "{text:?}");
        assert!(
            text.contains("[######################........]  75%"),
            "{text:?}"
        );
    }

    #[test]
    fn elsewhere_each_change_is_one_plain_line() {
        let mut out = Vec::new();
        let mut display = Display::new(&mut out, false);
        let mut now = waiting();
        display.show(&now).unwrap();
        display.show(&now).unwrap();
        now.status = CampaignStatus::Completed;
        now.step = None;
        display.show(&now).unwrap();
        display.finish().unwrap();
        let text = String::from_utf8(out).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2, "{text:?}");
        assert!(!text.contains('\r') && !text.contains('#'), "{text:?}");
        assert!(
            lines[1].starts_with("Q1 update: COMPLETED; 4 recipients"),
            "{text:?}"
        );
    }
}
