//! End-to-end tests of `cargo xtask` against real PostgreSQL servers in Docker.

mod attack;
mod clone_prod;
mod dev_db;
mod guard;
mod harness;
mod hostile_cli;
mod hostile_media;
mod integrity;
mod leak_scan;
mod libpq;
mod modes;
mod parallel;
mod schema_snapshot;
mod scrub;
mod scrub_netbox;
mod seed_dev;
mod signing;
mod spares;
mod ssh;
mod subset;
mod subset_ready_attack;
mod subset_template;
mod versions;
mod workflows;
