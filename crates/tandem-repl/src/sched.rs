//! The daemon's timetable, kept pure so it is tested with a virtual clock:
//! when each job is due, with a little jitter so that nodes do not all
//! snapshot at the same second, and with backoff after failures.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use tokio::time::Instant;

use crate::naming::JobName;

/// First retry delay after a failure; doubles per failure.
pub const BACKOFF_START: Duration = Duration::from_secs(15);
/// Longest retry delay.
pub const BACKOFF_MAX: Duration = Duration::from_secs(600);

/// Delay before the next try after `failures` failures in a row.
pub fn backoff(failures: u32, interval: Duration) -> Duration {
    let exp = BACKOFF_START.saturating_mul(1u32 << failures.saturating_sub(1).min(10));
    // Retry at least as often as the schedule would have run anyway, and
    // at most every BACKOFF_MAX.
    exp.min(BACKOFF_MAX.max(interval))
        .min(BACKOFF_MAX)
        .max(Duration::from_secs(1))
}

/// ±5 % of `interval`, from `r` in [0, 1).
pub fn jitter(interval: Duration, r: f64) -> Duration {
    let span = interval.as_secs_f64() * 0.10;
    interval.saturating_sub(Duration::from_secs_f64(span / 2.0))
        + Duration::from_secs_f64(span * r.clamp(0.0, 1.0))
}

#[derive(Debug, Clone)]
struct Entry {
    interval: Duration,
    next: Instant,
    failures: u32,
}

/// When each job runs next. Jobs that are running are never due.
#[derive(Debug, Default)]
pub struct Timetable {
    jobs: BTreeMap<JobName, Entry>,
    running: BTreeSet<JobName>,
}

impl Timetable {
    /// Sets the jobs and their intervals (on start and on reload). New jobs
    /// are due at once; kept jobs keep their times; removed jobs go.
    pub fn set_jobs(&mut self, jobs: &[(JobName, Duration)], now: Instant) {
        let keep: BTreeSet<&JobName> = jobs.iter().map(|(j, _)| j).collect();
        self.jobs.retain(|j, _| keep.contains(j));
        for (j, interval) in jobs {
            self.jobs
                .entry(j.clone())
                .and_modify(|e| e.interval = *interval)
                .or_insert(Entry {
                    interval: *interval,
                    next: now,
                    failures: 0,
                });
        }
    }

    /// Jobs due at `now` that are not running; they are marked running.
    pub fn take_due(&mut self, now: Instant) -> Vec<JobName> {
        let due: Vec<JobName> = self
            .jobs
            .iter()
            .filter(|(j, e)| e.next <= now && !self.running.contains(*j))
            .map(|(j, _)| j.clone())
            .collect();
        self.running.extend(due.iter().cloned());
        due
    }

    /// Records a finished run and schedules the next.
    pub fn finished(&mut self, job: &JobName, ok: bool, now: Instant, r: f64) {
        self.running.remove(job);
        if let Some(e) = self.jobs.get_mut(job) {
            if ok {
                e.failures = 0;
                e.next = now + jitter(e.interval, r);
            } else {
                e.failures += 1;
                e.next = now + backoff(e.failures, e.interval);
            }
        }
    }

    /// When the next job is due (None if there are no jobs).
    pub fn next_wakeup(&self) -> Option<Instant> {
        self.jobs
            .iter()
            .filter(|(j, _)| !self.running.contains(*j))
            .map(|(_, e)| e.next)
            .min()
    }

    /// Jobs currently running.
    pub fn running(&self) -> usize {
        self.running.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn j(s: &str) -> JobName {
        JobName::parse(s).expect("job")
    }

    #[test]
    fn backoff_doubles_and_is_capped() {
        let m = Duration::from_secs(60);
        assert_eq!(backoff(1, m), Duration::from_secs(15));
        assert_eq!(backoff(2, m), Duration::from_secs(30));
        assert_eq!(backoff(3, m), Duration::from_secs(60));
        assert_eq!(backoff(30, m), BACKOFF_MAX);
    }

    #[test]
    fn jitter_stays_within_five_percent() {
        let i = Duration::from_secs(60);
        assert_eq!(jitter(i, 0.0), Duration::from_secs(57));
        assert_eq!(jitter(i, 0.5), Duration::from_secs(60));
        assert!(jitter(i, 0.999) < Duration::from_secs(63));
    }

    #[tokio::test(start_paused = true)]
    async fn jobs_never_overlap_themselves_and_follow_interval_and_backoff() {
        let mut t = Timetable::default();
        let now = Instant::now();
        t.set_jobs(
            &[
                (j("a"), Duration::from_secs(60)),
                (j("b"), Duration::from_secs(60)),
            ],
            now,
        );
        assert_eq!(t.take_due(now), [j("a"), j("b")]);
        // still running: never due again
        tokio::time::advance(Duration::from_secs(300)).await;
        assert!(t.take_due(Instant::now()).is_empty());
        let now = Instant::now();
        t.finished(&j("a"), true, now, 0.5);
        t.finished(&j("b"), false, now, 0.5);
        assert_eq!(
            t.next_wakeup(),
            Some(now + Duration::from_secs(15)),
            "b retries after 15 s"
        );
        tokio::time::advance(Duration::from_secs(15)).await;
        assert_eq!(t.take_due(Instant::now()), [j("b")]);
        t.finished(&j("b"), false, Instant::now(), 0.5);
        tokio::time::advance(Duration::from_secs(29)).await;
        assert!(
            t.take_due(Instant::now()).is_empty(),
            "second failure waits 30 s"
        );
        tokio::time::advance(Duration::from_secs(16)).await;
        assert_eq!(
            t.take_due(Instant::now()),
            [j("a"), j("b")],
            "a's minute is up too"
        );
        // reload drops b, adds c (due at once)
        t.set_jobs(
            &[
                (j("a"), Duration::from_secs(60)),
                (j("c"), Duration::from_secs(60)),
            ],
            Instant::now(),
        );
        assert_eq!(t.take_due(Instant::now()), [j("c")]);
    }
}
