//! A reservation's state, changed by one CAS so exactly one of commit,
//! release and expiry wins.

use crate::sync::{AtomicU8, Ordering};

/// Where a reservation is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum State {
    /// A unit is held.
    Held,
    /// A commit won and is being written.
    Committing,
    /// A release won and is being written.
    Releasing,
    /// An expiry won and is being written.
    Expiring,
    /// Consumed: the card was printed.
    Committed,
    /// Given back.
    Released,
    /// Given back when the deadline passed.
    Expired,
}

impl State {
    const ALL: [State; 7] = [
        Self::Held,
        Self::Committing,
        Self::Releasing,
        Self::Expiring,
        Self::Committed,
        Self::Released,
        Self::Expired,
    ];

    fn code(self) -> u8 {
        match self {
            Self::Held => 0,
            Self::Committing => 1,
            Self::Releasing => 2,
            Self::Expiring => 3,
            Self::Committed => 4,
            Self::Released => 5,
            Self::Expired => 6,
        }
    }

    /// The state of a stored code; `None` for a byte no state writes.
    fn from_code(code: u8) -> Option<Self> {
        Self::ALL.get(usize::from(code)).copied()
    }

    /// The state of a cell's byte. Only [`State::code`] writes the cell, so
    /// an unknown byte is a bug or corrupt memory: it is never read as HELD
    /// (that would let its unit be given back or consumed again), but as
    /// COMMITTED, which refuses every transition and returns nothing.
    fn read(code: u8) -> Self {
        let state = Self::from_code(code);
        debug_assert!(state.is_some(), "unknown reservation state byte {code}");
        state.unwrap_or(Self::Committed)
    }

    /// Whether the state is one of the three ends.
    pub fn is_final(self) -> bool {
        matches!(self, Self::Committed | Self::Released | Self::Expired)
    }

    /// Whether a transition is being written.
    pub fn is_pending(self) -> bool {
        matches!(self, Self::Committing | Self::Releasing | Self::Expiring)
    }
}

/// One of the three ways a hold ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transition {
    /// Consumed.
    Commit,
    /// Given back on request.
    Release,
    /// Given back at the deadline.
    Expire,
}

impl Transition {
    /// The state while the transition is written.
    pub fn pending(self) -> State {
        match self {
            Self::Commit => State::Committing,
            Self::Release => State::Releasing,
            Self::Expire => State::Expiring,
        }
    }

    /// The state once it is written.
    pub fn done(self) -> State {
        match self {
            Self::Commit => State::Committed,
            Self::Release => State::Released,
            Self::Expire => State::Expired,
        }
    }
}

/// The state cell of one reservation.
#[derive(Debug)]
pub struct StateCell(AtomicU8);

impl StateCell {
    /// A cell in `state`.
    pub fn new(state: State) -> Self {
        Self(AtomicU8::new(state.code()))
    }

    /// The state now.
    pub fn get(&self) -> State {
        State::read(self.0.load(Ordering::Acquire))
    }

    /// Claims the transition: HELD becomes its pending state, for exactly one
    /// caller. Everyone else gets the state they found.
    pub fn begin(&self, transition: Transition) -> Result<(), State> {
        self.0
            .compare_exchange(
                State::Held.code(),
                transition.pending().code(),
                Ordering::AcqRel,
                Ordering::Acquire,
            )
            .map(drop)
            .map_err(State::read)
    }

    /// Marks a claimed transition written.
    pub fn complete(&self, transition: Transition) {
        // Only the caller that won `begin` completes, so the cell is still pending.
        let was = self.0.swap(transition.done().code(), Ordering::AcqRel);
        debug_assert_eq!(
            State::from_code(was),
            Some(transition.pending()),
            "completed a transition that was not begun"
        );
    }

    /// Gives a claimed transition up (its write failed): the hold stands again.
    pub fn abort(&self, transition: Transition) {
        let undone = self.0.compare_exchange(
            transition.pending().code(),
            State::Held.code(),
            Ordering::AcqRel,
            Ordering::Acquire,
        );
        debug_assert!(undone.is_ok(), "aborted a transition that was not begun");
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn only_the_first_transition_wins() {
        let cell = StateCell::new(State::Held);
        assert_eq!(cell.begin(Transition::Release), Ok(()));
        assert_eq!(cell.begin(Transition::Commit), Err(State::Releasing));
        cell.complete(Transition::Release);
        assert_eq!(cell.begin(Transition::Expire), Err(State::Released));
    }

    #[test]
    fn an_unknown_state_byte_is_never_read_as_held() {
        assert_eq!(State::from_code(7), None);
        assert_eq!(State::from_code(255), None);
        for state in State::ALL {
            assert_eq!(State::from_code(state.code()), Some(state));
        }
        // In release builds the unknown byte refuses every transition.
        if !cfg!(debug_assertions) {
            assert_eq!(State::read(9), State::Committed);
        }
    }

    #[test]
    fn an_aborted_transition_leaves_the_hold_standing() {
        let cell = StateCell::new(State::Held);
        assert_eq!(cell.begin(Transition::Commit), Ok(()));
        cell.abort(Transition::Commit);
        assert_eq!(cell.get(), State::Held);
        assert_eq!(cell.begin(Transition::Release), Ok(()));
    }
}
