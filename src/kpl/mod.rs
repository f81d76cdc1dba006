//! KPL aggregate de-aggregation and encoding (being built; see issue 3).
