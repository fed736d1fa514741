//! A manual clock and the settings that point a client at the fakes.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use pidgr_push::{Clock, PushEndpoints, PushSettings};

/// Time that moves only when told to. `sleep` records the wait and moves the clock by it, so a
/// retry's wait is observable and costs nothing.
pub struct ManualClock {
    now: Mutex<SystemTime>,
    sleeps: Mutex<Vec<Duration>>,
}

impl ManualClock {
    pub fn at(now: SystemTime) -> Arc<Self> {
        Arc::new(ManualClock {
            now: Mutex::new(now),
            sleeps: Mutex::new(Vec::new()),
        })
    }

    /// Starting at the real time, so the fakes (which check ages by the real clock) agree.
    pub fn starting_now() -> Arc<Self> {
        Self::at(SystemTime::now())
    }

    pub fn advance(&self, by: Duration) {
        *self.now.lock().unwrap() += by;
    }

    pub fn sleeps(&self) -> Vec<Duration> {
        self.sleeps.lock().unwrap().clone()
    }

    pub fn unix_seconds(&self) -> u64 {
        self.now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_secs()
    }
}

impl Clock for ManualClock {
    fn now(&self) -> SystemTime {
        *self.now.lock().unwrap()
    }

    fn sleep(&self, duration: Duration) -> Pin<Box<dyn Future<Output = ()> + Send>> {
        self.sleeps.lock().unwrap().push(duration);
        self.advance(duration);
        Box::pin(std::future::ready(()))
    }
}

/// Nothing listens here: an endpoint a test does not use.
pub const UNUSED: &str = "http://127.0.0.1:9";

pub fn settings(endpoints: PushEndpoints) -> PushSettings {
    PushSettings {
        endpoints,
        // Generous: only the timeout tests make an answer late, and they set their own.
        request_timeout: Duration::from_secs(30),
        ..PushSettings::default()
    }
}

pub fn endpoints() -> PushEndpoints {
    PushEndpoints {
        fcm_base_url: UNUSED.into(),
        fcm_token_url: format!("{UNUSED}/token"),
        apns_production_url: UNUSED.into(),
        apns_sandbox_url: UNUSED.into(),
    }
}
