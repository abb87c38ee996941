//! The broker's job state machine: which [`Trigger`] moves a job from which [`JobState`] to
//! which. Every write of `jobs.state` goes through [`next`], so this table is the whole
//! story:
//!
//! | from \ trigger | offer accepted | offer refused | retry | `job.accepted` | `job.progress` | `job.completed` | `job.failed` | input given up |
//! |---|---|---|---|---|---|---|---|---|
//! | `offered`   | `accepted` | `rejected` | | `accepted` | | | | |
//! | `rejected`  | | | `offered` | | | | | |
//! | `accepted`  | | | | `accepted` | `running` | `completed` | `failed` | `failed` |
//! | `running`   | | | | `running` | `running` | `completed` | `failed` | |
//! | `completed` | | | | | | | | |
//! | `failed`    | | | | | | | | |
//!
//! An empty cell is refused: `409 invalid-transition` for a provider's event, `409 conflict`
//! for a user's retry; the broker's own steps (offer answers, giving up an input) only act
//! when the job is still where they expect it. A late `job.accepted` does not move a running
//! job back.

use diax_sdk::wire::{JobEventKind, JobState};

/// What happens to a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Trigger {
    /// The provider answered the offer `202` with a matching `JobAccepted`.
    OfferAccepted,
    /// The offer was refused: the provider's problem, a bad answer, or no answer at all.
    OfferRefused,
    /// The user asks again for a rejected job.
    Retry,
    /// A signed `job.accepted` event.
    EventAccepted,
    /// A signed `job.progress` event.
    EventProgress,
    /// A signed `job.completed` event (its result is fetched first).
    EventCompleted,
    /// A signed `job.failed` event.
    EventFailed,
    /// The broker gave up delivering the job's input (PROTOCOL §5.5).
    InputGivenUp,
}

impl Trigger {
    /// Every trigger, for the table test.
    #[cfg(test)]
    pub(crate) const ALL: [Self; 8] = [
        Self::OfferAccepted,
        Self::OfferRefused,
        Self::Retry,
        Self::EventAccepted,
        Self::EventProgress,
        Self::EventCompleted,
        Self::EventFailed,
        Self::InputGivenUp,
    ];

    /// The trigger of a provider's event.
    pub(crate) fn of_event(kind: &JobEventKind) -> Self {
        match kind {
            JobEventKind::Accepted { .. } => Self::EventAccepted,
            JobEventKind::Progress { .. } => Self::EventProgress,
            JobEventKind::Completed { .. } => Self::EventCompleted,
            JobEventKind::Failed { .. } => Self::EventFailed,
        }
    }
}

/// Every job state, for tables and tests.
pub(crate) const ALL_STATES: [JobState; 6] = [
    JobState::Offered,
    JobState::Rejected,
    JobState::Accepted,
    JobState::Running,
    JobState::Completed,
    JobState::Failed,
];

/// The state `trigger` moves a job in state `from` to, or `None` when it is not allowed.
pub(crate) fn next(from: JobState, trigger: Trigger) -> Option<JobState> {
    use JobState as S;
    use Trigger as T;
    match (from, trigger) {
        (S::Offered, T::OfferAccepted | T::EventAccepted) => Some(S::Accepted),
        (S::Offered, T::OfferRefused) => Some(S::Rejected),
        (S::Rejected, T::Retry) => Some(S::Offered),
        (S::Accepted, T::EventAccepted) => Some(S::Accepted),
        (S::Running, T::EventAccepted) => Some(S::Running),
        (S::Accepted | S::Running, T::EventProgress) => Some(S::Running),
        (S::Accepted | S::Running, T::EventCompleted) => Some(S::Completed),
        (S::Accepted | S::Running, T::EventFailed) | (S::Accepted, T::InputGivenUp) => {
            Some(S::Failed)
        }
        _ => None,
    }
}

/// A stored state: the wire string back to the enum; `None` for anything else.
pub(crate) fn parse(s: &str) -> Option<JobState> {
    ALL_STATES.into_iter().find(|st| st.as_str() == s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_state_and_trigger_pair_is_allowed_or_refused_as_the_table_says() {
        use JobState as S;
        use Trigger as T;
        // One row per state, one column per trigger in `Trigger::ALL` order.
        let table: [(S, [Option<S>; 8]); 6] = [
            (
                S::Offered,
                [
                    Some(S::Accepted),
                    Some(S::Rejected),
                    None,
                    Some(S::Accepted),
                    None,
                    None,
                    None,
                    None,
                ],
            ),
            (
                S::Rejected,
                [None, None, Some(S::Offered), None, None, None, None, None],
            ),
            (
                S::Accepted,
                [
                    None,
                    None,
                    None,
                    Some(S::Accepted),
                    Some(S::Running),
                    Some(S::Completed),
                    Some(S::Failed),
                    Some(S::Failed),
                ],
            ),
            (
                S::Running,
                [
                    None,
                    None,
                    None,
                    Some(S::Running),
                    Some(S::Running),
                    Some(S::Completed),
                    Some(S::Failed),
                    None,
                ],
            ),
            (S::Completed, [None; 8]),
            (S::Failed, [None; 8]),
        ];
        let mut pairs = 0;
        for (from, row) in table {
            for (trigger, want) in T::ALL.into_iter().zip(row) {
                assert_eq!(next(from, trigger), want, "{from} + {trigger:?}");
                pairs += 1;
            }
        }
        assert_eq!(pairs, ALL_STATES.len() * T::ALL.len(), "every pair checked");
    }

    #[test]
    fn terminal_states_take_nothing_and_only_a_retry_leaves_rejected() {
        for from in ALL_STATES {
            let exits: Vec<_> = Trigger::ALL
                .into_iter()
                .filter(|t| next(from, *t).is_some())
                .collect();
            match from {
                JobState::Completed | JobState::Failed => assert!(exits.is_empty(), "{from}"),
                JobState::Rejected => assert_eq!(exits, [Trigger::Retry]),
                _ => assert!(!exits.is_empty(), "{from}"),
            }
        }
    }

    #[test]
    fn provider_events_move_a_job_where_the_event_says_unless_running_meets_a_late_accept() {
        let kinds = [
            JobEventKind::Accepted { quote: None },
            JobEventKind::Progress {
                percent: 1,
                stage: None,
            },
            JobEventKind::Failed {
                problem: diax_sdk::Problem::new(diax_sdk::ProblemType::ModelInvalid),
                charged: None,
            },
        ];
        for kind in &kinds {
            let to = next(JobState::Accepted, Trigger::of_event(kind));
            assert_eq!(to, Some(kind.state()), "{}", kind.name());
        }
        assert_eq!(
            next(JobState::Running, Trigger::EventAccepted),
            Some(JobState::Running)
        );
    }

    #[test]
    fn stored_states_round_trip_and_unknown_ones_are_refused() {
        for st in ALL_STATES {
            assert_eq!(parse(st.as_str()), Some(st));
        }
        for bad in ["", "Offered", "done", "accepted "] {
            assert_eq!(parse(bad), None, "{bad:?}");
        }
    }
}
