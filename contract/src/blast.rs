//! Blast-wave scaling laws (Hopkinson–Cranz, Kingery–Bulmash, Kinney–Graham), shared by the simulator (forward) and the aggregator (yield inversion).
