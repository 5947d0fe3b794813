//! Pure streaming DSP core: acoustic and seismic onset detection, picking and classification
