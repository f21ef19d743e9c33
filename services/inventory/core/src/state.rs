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

    fn from_code(code: u8) -> Self {
        Self::ALL.get(usize::from(code)).copied().unwrap_or(Self::Held)
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
        State::from_code(self.0.load(Ordering::Acquire))
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
            .map_err(State::from_code)
    }

    /// Marks a claimed transition written.
    pub fn complete(&self, transition: Transition) {
        self.0.store(transition.done().code(), Ordering::Release);
    }

    /// Gives a claimed transition up (its write failed): the hold stands again.
    pub fn abort(&self, transition: Transition) {
        let _ = self.0.compare_exchange(
            transition.pending().code(),
            State::Held.code(),
            Ordering::AcqRel,
            Ordering::Acquire,
        );
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
    fn an_aborted_transition_leaves_the_hold_standing() {
        let cell = StateCell::new(State::Held);
        assert_eq!(cell.begin(Transition::Commit), Ok(()));
        cell.abort(Transition::Commit);
        assert_eq!(cell.get(), State::Held);
        assert_eq!(cell.begin(Transition::Release), Ok(()));
    }
}
