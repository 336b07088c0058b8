//! Token budgets of the native module: the tokens each customer has used,
//! in one table for the whole Envoy process (a dynamic module shares the
//! process's memory across workers, where the Wasm module needs Envoy's
//! shared data), by [`crate::fleet::budget_key`] (environment and
//! customer: a test and a production configuration in one Envoy never
//! spend each other's tokens). A configuration update keeps the table, so
//! an update does not refill a budget, as with the Wasm module.

use crate::service::{Budget, HostFailure};
use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard, PoisonError};

static USED: Mutex<Option<HashMap<String, u64>>> = Mutex::new(None);

/// The table; a panic while it was held left it consistent (every change
/// is one insert or one arithmetic step), so a poisoned lock is taken as is.
fn table() -> MutexGuard<'static, Option<HashMap<String, u64>>> {
    USED.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Creates the budget's count at 0 if there is none yet.
pub fn init(key: String) {
    table()
        .get_or_insert_with(HashMap::new)
        .entry(key)
        .or_insert(0);
}

/// Takes one token of `budget`: exact across every worker of the process.
pub fn take(key: &str, budget: u64) -> Result<Budget, HostFailure> {
    let mut table = table();
    let table = table.get_or_insert_with(HashMap::new);
    let used = match table.get_mut(key) {
        Some(used) => used,
        None => table.entry(key.to_owned()).or_insert(0),
    };
    if *used >= budget {
        return Ok(Budget::Spent);
    }
    *used += 1;
    Ok(Budget::Taken)
}

/// Gives one token back; never below 0.
pub fn give_back(key: &str) {
    if let Some(used) = table().as_mut().and_then(|t| t.get_mut(key)) {
        *used = used.saturating_sub(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_budget_is_exact_across_threads() {
        let customer = "fpgen.budget.test.budget-threads";
        init(customer.to_owned());
        let taken: u64 = std::thread::scope(|s| {
            let workers: Vec<_> = (0..4)
                .map(|_| {
                    s.spawn(|| {
                        (0..100)
                            .filter(|_| take(customer, 150) == Ok(Budget::Taken))
                            .count() as u64
                    })
                })
                .collect();
            workers.into_iter().map(|w| w.join().unwrap()).sum()
        });
        assert_eq!(taken, 150);
        give_back(customer);
        assert_eq!(take(customer, 150), Ok(Budget::Taken));
        assert_eq!(take(customer, 150), Ok(Budget::Spent));
        // another environment's budget of the same customer is its own
        let production = "fpgen.budget.production.budget-threads";
        assert_eq!(take(production, 150), Ok(Budget::Taken));
    }
}
