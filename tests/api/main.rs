//! Black-box tests over real HTTP against a real SQLite file. One binary, one module per area.

mod account_logs;
mod admin;
mod analytics;
mod archive;
mod audit;
mod browser;
mod concurrency;
mod context;
mod customers;
mod errors;
mod faults;
mod helpers;
mod history;
mod journeys;
mod keys;
mod model;
mod neighbours;
mod nodes;
mod openapi;
mod ops;
mod process;
mod steps;
mod transfer;
mod ttl;
mod ui;
