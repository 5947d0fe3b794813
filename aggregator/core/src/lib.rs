//! Pure association, location, CRLB and yield
