//! Tests of the push client against the local fakes of FCM and APNs (one test binary).

mod apns;
mod collapse;
mod common;
mod credentials;
mod fcm;
