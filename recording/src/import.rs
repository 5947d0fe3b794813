//! Importers: third-party recording releases converted into SPEC scenario folders.

pub mod shotspotter;
