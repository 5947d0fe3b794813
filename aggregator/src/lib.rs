//! Aggregator service: ingest, store, publish, HTTP API and live map
