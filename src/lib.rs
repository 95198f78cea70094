//! ctxd: an event-sourced conversation context and journey engine.
//!
//! Where things are: a request is parsed and authenticated in `http`, decided in `domain`,
//! written by the single writer in `store`, and read back from the tables of `projections`.
#![forbid(unsafe_code)]

pub mod app;
pub mod auth;
pub mod cli;
pub mod clock;
pub mod commands;
pub mod demo;
pub mod domain;
pub mod http;
pub mod metrics;
pub mod projections;
pub mod signing;
pub mod steps;
pub mod store;
pub mod sweeper;
