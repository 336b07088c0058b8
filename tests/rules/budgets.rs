//! Token budgets, local and fleet, as steps of a token request.

#[allow(unused_imports, reason = "the shared imports, for every topic")]
use super::support::*;

#[test]
fn token_budget() {
    let config = account_config(|c| c["token_budget"] = 2.into());
    let counted = || FakeHost {
        budgets: Budgets::Counted,
        ..FakeHost::default()
    };
    let host = counted();
    let codes: Vec<i32> = (0..4)
        .map(|_| service::handle(&config, &base(), b"", &host).outcome.code())
        .collect();
    assert_eq!(codes, [0, 0, -2019, -2019]);
    // a host that fails while taking from the budget is an internal error
    let failing = FakeHost {
        budgets: Budgets::Fails,
        ..FakeHost::default()
    };
    let answer = service::handle(&config, &base(), b"", &failing);
    assert_eq!(
        (answer.response.status, answer.outcome.code()),
        (500, -9500)
    );
    assert!(!answer.response.body.contains("ExpressPlayToken"));
    // an invalid request does not spend the budget
    let host = counted();
    service::handle(
        &config,
        &format!("{AUTH}&contentKey=00&iv={IV}"),
        b"",
        &host,
    );
    assert_eq!(host.taken(), 0);
    // nor does one whose kid cannot be sealed (64 characters, 256 bytes)
    let kid: String = "%F0%9F%98%80".repeat(64);
    let answer = service::handle(&config, &format!("{}&kid=%5E{kid}", base()), b"", &host);
    assert_eq!(
        (answer.response.status, answer.outcome.code()),
        (400, -9421)
    );
    assert!(answer.response.body.contains("at most 255 bytes of UTF-8"));
    assert_eq!(host.taken(), 0);
    // nor one that fails for want of randomness: nothing minted, nothing spent
    let no_randomness = FakeHost {
        budgets: Budgets::Counted,
        random: Random::Fails,
        ..FakeHost::default()
    };
    let answer = service::handle(&config, &base(), b"", &no_randomness);
    assert_eq!(answer.outcome.code(), -9500);
    assert_eq!(no_randomness.taken(), 0);
    // the budget is still whole: two tokens, then -2019
    let codes: Vec<i32> = (0..3)
        .map(|_| service::handle(&config, &base(), b"", &host).outcome.code())
        .collect();
    assert_eq!(codes, [0, 0, -2019]);
}

/// The token endpoint in steps (issue 21): everything fpgen decides on
/// its own, then the budget. A customer without a budget is answered in
/// the first step; one with a budget gets a sealed token that waits for the
/// host's answer, and each answer gives its own response. Nothing is asked
/// for a refused request.
#[test]
fn the_budget_is_a_step_of_its_own() {
    use fpgen::service::{begin, Budget, HostFailure, Question, Step};
    let host = FakeHost::default();
    let plain = fixtures::config();
    assert!(matches!(begin(&plain, &base(), b"", &host), Step::Answer(a) if a.outcome.minted()));
    let budgeted = account_config(|c| c["token_budget"] = 7.into());
    let refused = begin(
        &budgeted,
        &format!("{AUTH}&contentKey=00&iv={IV}"),
        b"",
        &host,
    );
    assert!(matches!(refused, Step::Answer(a) if a.outcome.code() == -2027));
    let pending = || match begin(&budgeted, &base(), b"", &host) {
        Step::Budget(p) => p,
        Step::Answer(a) => panic!("answered before the budget: {a:?}"),
    };
    let p = pending();
    assert_eq!(
        (p.customer().as_str(), p.question()),
        (fixtures::CUSTOMER, Question::Local(7))
    );
    let taken = answered(p.continue_with(Ok(Budget::Taken), &host));
    assert_eq!(taken.response.status, 200);
    assert!(taken.response.body.contains("ExpressPlayToken="));
    let spent = answered(pending().continue_with(Ok(Budget::Spent), &host));
    assert_eq!((spent.response.status, spent.outcome.code()), (429, -2019));
    assert!(spent
        .response
        .body
        .contains("the budget of 7 tokens is spent"));
    assert_eq!(
        spent.outcome.customer_id.as_ref().map(|c| c.as_str()),
        Some(fixtures::CUSTOMER)
    );
    assert!(!spent.response.body.contains("ExpressPlayToken"));
    let failed = answered(pending().continue_with(Err(HostFailure("budget store down")), &host));
    assert_eq!(
        (failed.response.status, failed.outcome.code()),
        (500, -9500)
    );
    assert!(failed.response.body.contains("budget store down"));
    // handle is the steps with the host's own budget between them
    let counted = FakeHost {
        budgets: Budgets::Counted,
        ..FakeHost::default()
    };
    let minted = service::handle(&budgeted, &base(), b"", &counted);
    assert!(minted.outcome.minted());
    assert_eq!(counted.taken(), 1);
}

/// With both budgets the local one is asked first, then the fleet's; a
/// local token taken for a request the fleet refuses is given back, so
/// neither budget is spent by a refused request. The failure mode decides
/// what a fleet budget that cannot be asked gives: -9503 (closed) or the
/// token (open).
#[test]
fn a_fleet_budget_is_asked_after_the_local_one() {
    use fpgen::fleet::Failure;
    use fpgen::service::{begin, Budget, Question, Step};
    let fleet = fpgen::config::FleetBudget {
        tokens: 100,
        per: fpgen::config::Period::Day,
        lease: 10,
    };
    let host = FakeHost {
        budgets: Budgets::Counted,
        ..FakeHost::default()
    };
    let closed = fleet_config("closed", Some(5));
    let ask = |config: &Config| match begin(config, &base(), b"", &host) {
        Step::Budget(p) => p,
        Step::Answer(a) => panic!("answered before the budget: {a:?}"),
    };
    let local_then = |config: &Config, fleet_answer| {
        let p = ask(config);
        assert_eq!(p.question(), Question::Local(5));
        let taken = host.take_from_budget(p.customer(), 5);
        let Step::Budget(p) = p.continue_with(taken, &host) else {
            panic!("the fleet budget was not asked");
        };
        assert_eq!(p.question(), Question::Fleet(fleet));
        answered(p.continue_with(Ok(fleet_answer), &host))
    };
    let minted = local_then(&closed, Budget::Taken);
    assert!(minted.outcome.minted());
    assert_eq!(host.taken(), 1);
    let spent = local_then(&closed, Budget::FleetSpent);
    assert_eq!((spent.response.status, spent.outcome.code()), (429, -2019));
    assert!(spent
        .response
        .body
        .contains("the fleet budget of 100 tokens per day is spent"));
    assert_eq!(host.taken(), 1, "the local token was not given back");
    for failure in Failure::ALL {
        let closed_answer = local_then(&closed, Budget::FleetUnavailable(failure));
        assert_eq!(
            (closed_answer.response.status, closed_answer.outcome.code()),
            (503, -9503)
        );
        assert!(closed_answer.response.body.contains(failure.message()));
        assert_eq!(host.taken(), 1, "{failure:?}: the local token was kept");
        let open = fleet_config("open", Some(5));
        let open_answer = local_then(&open, Budget::FleetUnavailable(failure));
        assert!(open_answer.outcome.minted(), "{failure:?}");
        assert_eq!(
            host.taken(),
            2,
            "{failure:?}: open mode counts the local token"
        );
        host.give_back_to_budget(&fixtures::id(fixtures::CUSTOMER));
    }
    // A request whose client left while the fleet was asked gives its
    // local token back.
    let p = ask(&closed);
    let taken = host.take_from_budget(p.customer(), 5);
    let Step::Budget(p) = p.continue_with(taken, &host) else {
        panic!("the fleet budget was not asked");
    };
    assert_eq!(host.taken(), 2);
    p.abandon(&host);
    assert_eq!(
        host.taken(),
        1,
        "the abandoned request kept its local token"
    );
    // A fleet budget alone is the only question.
    let only_fleet = fleet_config("closed", None);
    let p = ask(&only_fleet);
    assert_eq!(p.question(), Question::Fleet(fleet));
    assert!(answered(p.continue_with(Ok(Budget::Taken), &host))
        .outcome
        .minted());
    // A host that cannot ask fleet budgets fails such a request, never
    // mints it uncounted.
    let failed = service::handle(&only_fleet, &base(), b"", &host);
    assert_eq!(failed.outcome.code(), -9500);
    let asked = service::handle_with_fleet(&only_fleet, &base(), b"", &host, &|id, budget| {
        assert_eq!((id.as_str(), budget), (fixtures::CUSTOMER, fleet));
        Ok(Budget::FleetSpent)
    });
    assert_eq!(asked.outcome.code(), -2019);
}
