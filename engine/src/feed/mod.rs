//! Feed edge: decoding (sans-IO) and the ingester thread.

mod conflate;
pub mod decode;
pub mod error;
pub mod ingest;
mod scan;
pub mod ws;
