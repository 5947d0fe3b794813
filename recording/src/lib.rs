//! Scenario and WAV recording reader: streams every node stream in blocks with constant memory
