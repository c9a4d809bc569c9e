//! Integration tests of the cluster transport: real masters and workers on 127.0.0.1 with ephemeral ports,
//! every wait bounded, asserting on what arrives at the other end (events, payloads, refusals, counters).

mod bounds;
mod common;
mod failures;
mod fetch;
mod health;
mod security;
mod session;
