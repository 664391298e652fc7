#![doc = include_str!("../README.md")]
#![deny(unsafe_code, rust_2018_idioms, nonstandard_style)]
#![warn(missing_docs, unreachable_pub)]

mod connect;
mod conninfo;
mod error;
pub mod pooler;
mod tls;

pub use connect::{
    connect, connect_listening, connect_timeout, os_user_name, pool, pool_with_wait,
    resolve_config, DEFAULT_CONNECT_TIMEOUT, POOL_WAIT_TIMEOUT,
};
pub use error::{source_chain, Error, Result, ServerError};
pub use tls::{SslMode, TlsOptions};
