//! Integration tests: real servers on 127.0.0.1, real runs, assertions on what the server saw and what the reports
//! say. All tests live in one binary to keep link time down.

mod common;

mod arrival;
mod bad_input;
mod checks;
mod cli;
mod client;
mod cluster;
mod cluster_netns;
mod data;
mod engine;
mod guard;
mod messages;
mod metrics;
mod web;
