"""router.accounts: round robin, cooldowns (whole account and per model), sticky sessions, reload."""

from __future__ import annotations

import pytest

from router.accounts import Account, Pool, StateStore, compile_accounts


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def accounts(provider: str = "p", n: int = 3) -> tuple[Account, ...]:
    return tuple(Account(provider, f"a{i}", f"a{i}@x", f"key{i}") for i in range(n))


def picks(pool: Pool, store: StateStore, n: int, model: str = "m", session: str | None = None,
          exclude: set[str] | None = None) -> list[str | None]:
    out = []
    for _ in range(n):
        acc = pool.pick(store, model, session, exclude or set()).account
        out.append(acc.id if acc else None)
    return out


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def store(clock: Clock) -> StateStore:
    return StateStore(clock)


def test_round_robin_rotates(store: StateStore) -> None:
    pool = Pool("p", accounts(), "round_robin")
    assert picks(pool, store, 7) == ["a0", "a1", "a2", "a0", "a1", "a2", "a0"]
    assert store.state("p/a0").requests == 3 and store.state("p/a2").requests == 2


def test_cooling_accounts_are_skipped_and_wait_reports_the_soonest(store: StateStore, clock: Clock) -> None:
    accs = accounts()
    pool = Pool("p", accs, "round_robin")
    store.cool(accs[0], 30, None, "429")
    assert picks(pool, store, 4) == ["a1", "a2", "a1", "a2"]
    store.cool(accs[1], 10, None, "429")
    store.cool(accs[2], 20, None, "429")
    pick = pool.pick(store, "m", None, set())
    assert pick.account is None and pick.wait == pytest.approx(10.0)
    clock.now += 10.5
    assert picks(pool, store, 2) == ["a1", "a1"]
    clock.now += 20
    assert sorted(picks(pool, store, 3)) == ["a0", "a1", "a2"]


def test_cooldowns_never_shorten(store: StateStore, clock: Clock) -> None:
    acc = accounts(n=1)
    store.cool(acc[0], 60, None, "429")
    store.cool(acc[0], 5, None, "429")
    assert store.state("p/a0").cooling_for("m", clock()) == pytest.approx(60.0)
    assert [r for _, r in store.state("p/a0").failures] == ["429", "429"]


def test_per_model_cooldown_only_affects_that_model(store: StateStore) -> None:
    accs = accounts(n=2)
    pool = Pool("p", accs, "round_robin")
    store.cool(accs[0], 60, "gemini-2.5-pro", "quota")
    assert picks(pool, store, 4, model="gemini-2.5-pro") == ["a1", "a1", "a1", "a1"]
    assert sorted(picks(pool, store, 4, model="gemini-2.5-flash")) == ["a0", "a0", "a1", "a1"]


def test_exclude_skips_accounts_already_tried(store: StateStore) -> None:
    pool = Pool("p", accounts(), "round_robin")
    assert picks(pool, store, 3, exclude={"p/a0", "p/a1"}) == ["a2", "a2", "a2"]
    pick = pool.pick(store, "m", None, {"p/a0", "p/a1", "p/a2"})
    assert pick.account is None and pick.wait == 0.0


def test_empty_pool(store: StateStore) -> None:
    assert Pool("p", (), "round_robin").pick(store, "m", "s", set()).account is None


def test_sticky_binds_a_session_and_moves_when_the_account_cools(store: StateStore, clock: Clock) -> None:
    accs = accounts()
    pool = Pool("p", accs, "sticky")
    first = picks(pool, store, 5, session="alice")
    assert len(set(first)) == 1
    bound = next(a for a in accs if a.id == first[0])
    other = picks(pool, store, 1, session="bob")[0]
    assert other != first[0] and picks(pool, store, 3, session="bob") == [other] * 3

    store.cool(bound, 30, None, "429")
    moved = picks(pool, store, 4, session="alice")
    assert len(set(moved)) == 1 and moved[0] != first[0]
    clock.now += 60  # the old account is back, but the session stays where it moved to
    assert picks(pool, store, 2, session="alice") == [moved[0]] * 2


def test_sticky_without_session_is_round_robin(store: StateStore) -> None:
    assert picks(Pool("p", accounts(), "sticky"), store, 3) == ["a0", "a1", "a2"]


def test_state_survives_a_reload(store: StateStore, clock: Clock) -> None:
    old = Pool("p", accounts(), "sticky")
    assert picks(old, store, 1, session="s") == ["a0"]
    store.cool(accounts()[1], 60, None, "429")
    # the next snapshot compiles new Account objects for the same ids, and a new Pool
    new = Pool("p", accounts(), "sticky")
    assert picks(new, store, 3, session="s") == ["a0", "a0", "a0"]
    assert "a1" not in picks(new, store, 6)
    assert store.state("p/a1").cooling_for("m", clock()) == pytest.approx(60.0)
    # both pools share the cursor too, so rotation continues instead of restarting at a0
    clock.now += 120
    assert sorted(picks(old, store, 1) + picks(new, store, 1) + picks(old, store, 1)) == ["a0", "a1", "a2"]


def test_providers_do_not_share_state(store: StateStore) -> None:
    p, q = Pool("p", accounts("p"), "round_robin"), Pool("q", accounts("q"), "round_robin")
    store.cool(accounts("p")[0], 60, None, "429")
    assert picks(q, store, 1) == ["a0"] and picks(p, store, 1) == ["a1"]


def test_reset_clears_cooldown_and_keeps_counters(store: StateStore, clock: Clock) -> None:
    acc = accounts(n=1)[0]
    Pool("p", (acc,), "round_robin").pick(store, "m", None, set())
    store.cool(acc, 60, None, "429")
    store.reset("p/a0")
    assert store.state("p/a0").cooling_for("m", clock()) == 0.0 and store.state("p/a0").requests == 1


def test_sticky_table_is_bounded(store: StateStore) -> None:
    store.STICKY_MAX = 3
    for i in range(5):
        store.bind(f"s{i}", "p/a0")
    assert list(store.sticky) == ["s2", "s3", "s4"]


def test_account_public_view_never_has_the_key() -> None:
    acc = Account("p", "id", "e@x", "sekret")
    assert "sekret" not in repr(acc) and "sekret" not in str(acc.public())


@pytest.mark.parametrize(("section", "expected"), [
    ({"accounts": [{"email": "a@x", "api_key": "k1"}, {"email": "b@x", "api_key": ""}]}, [("a@x", "a@x", "k1")]),
    ({"accounts": [{"api_key": "k1", "id": "one"}]}, [("one", "p-1", "k1")]),
    ({"key_list": "k1, k2"}, [("p-key-1", "p-key-1", "k1"), ("p-key-2", "p-key-2", "k2")]),
    ({"key_list": "a@x=k1,,b@x = k2 "}, [("a@x", "a@x", "k1"), ("b@x", "b@x", "k2")]),
    ({"accounts": [{"email": "a@x", "api_key": "k1"}], "key_list": "k2"}, [("a@x", "a@x", "k1"),
                                                                          ("p-key-2", "p-key-2", "k2")]),
    ({"accounts": [{"api_key": ""}], "key_list": ""}, []),
], ids=["empty-key-dropped", "explicit-id", "key-list", "key-list-emails", "both", "none"])
def test_compile_accounts(section: dict, expected: list[tuple[str, str, str]]) -> None:
    assert [(a.id, a.email, a.api_key) for a in compile_accounts("p", section)] == expected
