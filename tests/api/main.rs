//! Integration tests: the real server on an ephemeral port, spoken to over HTTP, and
//! the `wrapup` binary run as a process.

mod chat;
mod helpers;
mod receiver;

mod actions;
mod alerts;
mod auth;
mod bounds;
mod caps;
mod cli;
mod console;
mod corpus;
mod crash;
mod destinations;
mod docs;
mod errors;
mod hooks;
mod hostile;
mod insight;
mod lifecycle;
mod openai;
mod openapi;
mod ops;
mod redaction;
mod scale;
mod summaries;
mod tls;
mod upgrade;
mod validation;
