//! Offline tools over the blastnet pipeline, for analysts and developers:
//! replay orchestration ([`replay`]), evaluation of the detector against
//! truth ([`eval`]), classifier training ([`train`]), deployment planning
//! ([`plan`]), detection speed ([`bench`]) and report lines ([`report`]).
//!
//! Nothing here runs on a field node or in the aggregator service: the
//! `blastnet` binary's subcommands are thin shells over these functions
//! (arguments in, one call, print). Errors are `anyhow` because every one of
//! them ends in front of a person at a terminal, with its context chain.

pub mod bench;
pub mod eval;
pub mod plan;
pub mod replay;
pub mod report;
pub mod train;
