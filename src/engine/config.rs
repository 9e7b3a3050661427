//! What an operator configures about the matching engine: the instruments and the capacities the
//! engine preallocates at start.

use serde::{Deserialize, Serialize};

use super::snapshot::SNAPSHOT_FORMAT_VERSIONS;
use super::types::{Price, Symbol};
use crate::constants::{
    ENGINE_CL_ORD_IDS_MAX_DEFAULT, ENGINE_CL_ORD_IDS_MAX_LIMIT, ENGINE_INSTRUMENTS_MAX,
    ENGINE_LEVELS_MAX_DEFAULT, ENGINE_LEVELS_MAX_LIMIT, ENGINE_ORDERS_MAX_DEFAULT,
    ENGINE_ORDERS_MAX_LIMIT,
};

/// The `[engine]` section. Every key is optional (`#[serde(default)]`): a missing key takes the
/// value of [`EngineConfig::default`], so an empty section runs the demo instruments.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EngineConfig {
    /// The instruments traded; an order for any other symbol is rejected with UnknownSymbol.
    pub instruments: Vec<InstrumentConfig>,
    /// Open orders across all books; memory for them is reserved at start and a new order that
    /// would rest when all are in use is rejected.
    pub orders_max: u32,
    /// Price levels per side of each book; an order that needs a new level on a full side is
    /// rejected.
    pub levels_max: u32,
    /// ClOrdIDs remembered for the session day across all sessions (every request uses one, so
    /// duplicates can be refused all day); requests beyond it are rejected.
    pub cl_ord_ids_max: u32,
}

/// One tradable instrument.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InstrumentConfig {
    /// The FIX Symbol (tag 55) clients send; 1 to 16 printable ASCII bytes, unique.
    pub symbol: String,
    /// Smallest price increment; prices must be whole multiples. Written as `0.01` or `"0.01"`
    /// and read exactly (fixed point), so the check never suffers float rounding.
    pub tick_size: Price,
    /// Smallest quantity increment; quantities must be whole multiples.
    pub lot_size: u64,
}

impl Default for EngineConfig {
    /// A few demo instruments with different tick and lot sizes, and capacities from
    /// [`crate::constants`].
    fn default() -> Self {
        let instrument = |symbol: &str, tick_raw: i64, lot_size: u64| InstrumentConfig {
            symbol: symbol.to_owned(),
            tick_size: Price(tick_raw),
            lot_size,
        };
        EngineConfig {
            instruments: vec![
                instrument("AAPL", Price::SCALE / 100, 1),
                instrument("MSFT", Price::SCALE / 100, 1),
                instrument("ESZ6", Price::SCALE / 4, 1),
                instrument("EURUSD", Price::SCALE / 100_000, 1000),
            ],
            orders_max: ENGINE_ORDERS_MAX_DEFAULT,
            levels_max: ENGINE_LEVELS_MAX_DEFAULT,
            cl_ord_ids_max: ENGINE_CL_ORD_IDS_MAX_DEFAULT,
        }
    }
}

/// Why an engine configuration cannot be used. Each variant names the offending key or symbol so
/// that the operator can fix the file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EngineConfigError {
    /// An engine without instruments would reject every order; almost certainly a mistake.
    #[error("engine.instruments is empty")]
    NoInstruments,
    /// More instruments than [`ENGINE_INSTRUMENTS_MAX`].
    #[error("engine.instruments has {count} entries, at most {max} are supported")]
    TooManyInstruments {
        /// How many were configured.
        count: usize,
        /// The limit.
        max: usize,
    },
    /// A symbol is empty, too long or not printable ASCII.
    #[error("engine instrument symbol {symbol:?} must be 1 to 16 printable ASCII characters")]
    InvalidSymbol {
        /// The symbol as configured.
        symbol: String,
    },
    /// Two instruments share a symbol, so orders could not be routed to one book.
    #[error("engine instrument symbol {symbol:?} is configured twice")]
    DuplicateSymbol {
        /// The repeated symbol.
        symbol: String,
    },
    /// A tick size of zero or less makes every price check meaningless.
    #[error("engine instrument {symbol:?}: tick_size must be positive, got {tick_size}")]
    TickSizeNotPositive {
        /// The instrument.
        symbol: String,
        /// The configured tick size.
        tick_size: Price,
    },
    /// A lot size of zero makes every quantity check meaningless.
    #[error("engine instrument {symbol:?}: lot_size must be positive")]
    LotSizeZero {
        /// The instrument.
        symbol: String,
    },
    /// A capacity is zero or above what the engine can address.
    #[error("engine.{key} = {value} is out of range 1..={max}")]
    CapacityOutOfRange {
        /// The config key.
        key: &'static str,
        /// The configured value.
        value: u32,
        /// The largest accepted value.
        max: u32,
    },
    /// A snapshot format this build cannot write (`--snapshot-format`).
    #[error(
        "snapshot format version {format} is not supported (this build writes {SNAPSHOT_FORMAT_VERSIONS:?})"
    )]
    UnsupportedSnapshotFormat {
        /// The version asked for.
        format: u16,
    },
}

/// A configured instrument after validation.
#[derive(Clone, Copy, Debug)]
pub(crate) struct InstrumentSpec {
    /// The symbol orders carry.
    pub symbol: Symbol,
    /// Positive; prices must be multiples.
    pub tick_size: Price,
    /// Positive; quantities must be multiples.
    pub lot_size: u64,
}

impl EngineConfig {
    /// Checks the configuration and returns the instruments sorted by symbol, the order in which
    /// the engine keeps its books (so iteration over books is deterministic).
    pub(crate) fn validate(&self) -> Result<Vec<InstrumentSpec>, EngineConfigError> {
        if self.instruments.is_empty() {
            return Err(EngineConfigError::NoInstruments);
        }
        if self.instruments.len() > ENGINE_INSTRUMENTS_MAX {
            return Err(EngineConfigError::TooManyInstruments {
                count: self.instruments.len(),
                max: ENGINE_INSTRUMENTS_MAX,
            });
        }
        for (key, value, max) in [
            ("orders_max", self.orders_max, ENGINE_ORDERS_MAX_LIMIT),
            ("levels_max", self.levels_max, ENGINE_LEVELS_MAX_LIMIT),
            (
                "cl_ord_ids_max",
                self.cl_ord_ids_max,
                ENGINE_CL_ORD_IDS_MAX_LIMIT,
            ),
        ] {
            if value == 0 || value > max {
                return Err(EngineConfigError::CapacityOutOfRange { key, value, max });
            }
        }
        let mut specs = Vec::with_capacity(self.instruments.len());
        for instrument in &self.instruments {
            let symbol = Symbol::try_from_bytes(instrument.symbol.as_bytes()).ok_or_else(|| {
                EngineConfigError::InvalidSymbol {
                    symbol: instrument.symbol.clone(),
                }
            })?;
            if instrument.tick_size.0 <= 0 {
                return Err(EngineConfigError::TickSizeNotPositive {
                    symbol: instrument.symbol.clone(),
                    tick_size: instrument.tick_size,
                });
            }
            if instrument.lot_size == 0 {
                return Err(EngineConfigError::LotSizeZero {
                    symbol: instrument.symbol.clone(),
                });
            }
            specs.push(InstrumentSpec {
                symbol,
                tick_size: instrument.tick_size,
                lot_size: instrument.lot_size,
            });
        }
        specs.sort_by_key(|spec| spec.symbol);
        if let Some(pair) = specs
            .windows(2)
            .find(|pair| pair[0].symbol == pair[1].symbol)
        {
            return Err(EngineConfigError::DuplicateSymbol {
                symbol: pair[0].symbol.to_string(),
            });
        }
        Ok(specs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_config_is_valid() {
        let specs = EngineConfig::default().validate().unwrap();
        let symbols: Vec<&str> = specs.iter().map(|s| s.symbol.as_str()).collect();
        assert_eq!(symbols, ["AAPL", "ESZ6", "EURUSD", "MSFT"]);
    }

    #[test]
    fn toml_config_reads_ticks_exactly_and_names_bad_keys() {
        let config: EngineConfig = toml::from_str(
            r#"
            orders_max = 100
            [[instruments]]
            symbol = "XYZ"
            tick_size = 0.01
            lot_size = 100
            [[instruments]]
            symbol = "ABC"
            tick_size = "0.0005"
            lot_size = 1
            "#,
        )
        .unwrap();
        assert_eq!(config.instruments[0].tick_size, Price(1_000_000));
        assert_eq!(config.instruments[1].tick_size, Price(50_000));
        assert_eq!(config.orders_max, 100);
        assert_eq!(config.levels_max, ENGINE_LEVELS_MAX_DEFAULT);
        let err = toml::from_str::<EngineConfig>("order_max = 5").unwrap_err();
        assert!(err.to_string().contains("order_max"), "{err}");
    }

    #[test]
    fn invalid_configs_are_refused_with_the_reason() {
        let mut config = EngineConfig::default();
        config.instruments[1].symbol = "AAPL".into();
        assert_eq!(
            config.validate().unwrap_err(),
            EngineConfigError::DuplicateSymbol {
                symbol: "AAPL".into()
            }
        );
        let mut config = EngineConfig::default();
        config.instruments[0].tick_size = Price(0);
        assert!(matches!(
            config.validate(),
            Err(EngineConfigError::TickSizeNotPositive { .. })
        ));
        let mut config = EngineConfig::default();
        config.instruments[0].lot_size = 0;
        assert!(matches!(
            config.validate(),
            Err(EngineConfigError::LotSizeZero { .. })
        ));
        let mut config = EngineConfig::default();
        config.instruments[0].symbol = "WAY_TOO_LONG_SYMBOL".into();
        assert!(matches!(
            config.validate(),
            Err(EngineConfigError::InvalidSymbol { .. })
        ));
        let config = EngineConfig {
            orders_max: 0,
            ..EngineConfig::default()
        };
        assert!(matches!(
            config.validate(),
            Err(EngineConfigError::CapacityOutOfRange {
                key: "orders_max",
                ..
            })
        ));
        let config = EngineConfig {
            instruments: vec![],
            ..EngineConfig::default()
        };
        assert_eq!(
            config.validate().unwrap_err(),
            EngineConfigError::NoInstruments
        );
    }
}
