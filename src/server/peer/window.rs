//! Per-second allowances for peer calls a misbehaving peer could flood:
//! joins (all together, before anyone is known) and hellos (per caller).
//! A call past the allowance is refused at once; the first refusal of a
//! burst, and every power of two after it, is logged (`Burst` does the
//! same for refusals that were read).

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// Most calls taken per key in each second.
#[derive(Debug)]
pub struct Window {
    most: u32,
    keys: HashMap<String, Second>,
}

#[derive(Debug)]
struct Second {
    started: Instant,
    taken: u32,
    /// Refusals since this key last had a call taken after a quiet second.
    refused: u64,
}

/// A call refused, and how many in a row: logged when `log` says so.
pub struct Refused {
    pub count: u64,
}

impl Refused {
    /// The first refusal of a burst, and each power of two after it.
    pub fn log(&self) -> bool {
        self.count == 1 || self.count.is_power_of_two()
    }
}

impl Window {
    pub fn new(most: u32) -> Window {
        Window {
            most,
            keys: HashMap::new(),
        }
    }

    /// Counts one call for `key`; refused when its second's allowance is
    /// used up.
    pub fn admit(&mut self, key: &str) -> Result<(), Refused> {
        let now = Instant::now();
        let second = self.keys.entry(key.to_string()).or_insert(Second {
            started: now,
            taken: 0,
            refused: 0,
        });
        if now.duration_since(second.started) >= Duration::from_secs(1) {
            if second.taken < self.most {
                // A quiet second: the burst is over.
                second.refused = 0;
            }
            second.started = now;
            second.taken = 0;
        }
        if second.taken < self.most {
            second.taken += 1;
            return Ok(());
        }
        second.refused += 1;
        Err(Refused {
            count: second.refused,
        })
    }
}

/// Which events of a run to log: the first after a quiet second, then each
/// power of two of the run (so a flood leaves a few lines, not one per
/// event).
#[derive(Debug, Default)]
pub struct Burst {
    last: Option<Instant>,
    run: u64,
}

impl Burst {
    /// Counts one event; the length of its run when it should be logged.
    pub fn log(&mut self) -> Option<u64> {
        let now = Instant::now();
        if self
            .last
            .is_none_or(|last| now.duration_since(last) >= Duration::from_secs(1))
        {
            self.run = 0;
        }
        self.last = Some(now);
        self.run += 1;
        (self.run == 1 || self.run.is_power_of_two()).then_some(self.run)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_window_takes_its_allowance_per_key_and_counts_refusals_for_the_log() {
        let mut window = Window::new(3);
        for _ in 0..3 {
            assert!(window.admit("a").is_ok());
        }
        let logged: Vec<bool> = (0..5)
            .map(|_| window.admit("a").expect_err("over the allowance").log())
            .collect();
        assert_eq!(logged, [true, true, false, true, false], "1st, 2nd, 4th");
        assert!(window.admit("b").is_ok(), "each key has its own");
    }

    #[test]
    fn a_burst_is_logged_at_its_start_and_at_each_power_of_two() {
        let mut burst = Burst::default();
        let logged: Vec<u64> = (0..9).filter_map(|_| burst.log()).collect();
        assert_eq!(logged, [1, 2, 4, 8]);
    }
}
