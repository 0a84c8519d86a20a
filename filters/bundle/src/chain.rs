//! How a request goes through the bundle's filters.
//!
//! **Order** ([`crate::Section::ALL`]): OAuth2, A/B, retry budget, fault — the order the four
//! separate WasmPlugins have in Istio's chain (phase AUTHN priority 1000 and 100; phase
//! UNSPECIFIED priority 20 and 10), and the order the filters need:
//!
//! 1. *OAuth2 first*: nothing acts on a request before it is authenticated — a login redirect or
//!    a 401 is not assigned a variant, budgeted or faulted — and the A/B filter reads the user's
//!    identity from the `Authorization: Bearer` JWT that OAuth2 forwards.
//! 2. *A/B before the retry budget*: the A/B header picks the route, so the budget, kept per
//!    destination, must see the final one.
//! 3. *Retry budget before fault*: on the callee's side the budget has to count every request
//!    the service receives, also those a fault then fails (a fault stands in for the service
//!    failing; skipping the count would shrink the budget the drill is meant to exercise), and a
//!    retry shed by the budget is answered at once rather than delayed first.
//! 4. *Fault last*, closest to the router, like Envoy's own fault filter.
//!
//! **Response phase**: the filters in reverse order, as Envoy runs encoder filters.
//!
//! **Pause and resume**: a filter may pause a request (OAuth2 waiting for the IdP or the token
//! endpoint, a fault delay) and let it go on later. The filters after it have not seen it yet:
//! on that resume they run their request phase first, and the stream really goes on only when
//! they all continue ([`Progress`]).

/// A filter's answer in a phase.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    Continue,
    /// Stop here: the filter holds the request (and lets it go on later) or answered it.
    Pause,
}

/// What to do when the filter holding a request lets it go on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resume {
    /// Run the request phase of the filters from this index on, then, if they all continue,
    /// resume the stream.
    RunFrom(usize),
    /// The filter let it go on from inside its own request phase: the running pass treats its
    /// pause as a continue and goes on by itself.
    InPass,
    /// No filter holds the request: resume the stream (the host refuses a stream that is not
    /// paused, harmlessly).
    Stream,
}

/// One request's way through the filters. Interior mutability: a filter's resume arrives from
/// inside calls the bundle is making (a continuation runs from the resuming filter's call).
#[derive(Debug, Default)]
pub struct Progress {
    /// The filter holding the request.
    paused_at: std::cell::Cell<Option<usize>>,
    /// The filter whose request phase is running.
    running: std::cell::Cell<Option<usize>>,
    /// The running filter let the request go on from inside its call.
    resumed_in_pass: std::cell::Cell<bool>,
}

impl Progress {
    pub fn new() -> Self {
        Self::default()
    }

    /// Runs the request phase of filters `from..len` (`call(i)`), stopping at the first that
    /// pauses; that one then holds the request.
    pub fn run(&self, from: usize, len: usize, mut call: impl FnMut(usize) -> Flow) -> Flow {
        for i in from..len {
            let outer = self.running.replace(Some(i));
            self.resumed_in_pass.set(false);
            let flow = call(i);
            self.running.set(outer);
            if flow == Flow::Pause && !self.resumed_in_pass.take() {
                self.paused_at.set(Some(i));
                return Flow::Pause;
            }
        }
        Flow::Continue
    }

    /// The filter holding the request lets it go on.
    pub fn resume(&self) -> Resume {
        if self.running.get().is_some() {
            self.resumed_in_pass.set(true);
            return Resume::InPass;
        }
        match self.paused_at.take() {
            Some(i) => Resume::RunFrom(i.saturating_add(1)),
            None => Resume::Stream,
        }
    }

    /// The filter holding the request, if one does.
    pub fn paused_at(&self) -> Option<usize> {
        self.paused_at.get()
    }
}

/// The response phase's order over `len` filters: the request's, reversed.
pub fn response_order(len: usize) -> impl Iterator<Item = usize> {
    (0..len).rev()
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    #[test]
    fn all_continue_in_order() {
        let p = Progress::new();
        let mut seen = Vec::new();
        let flow = p.run(0, 4, |i| {
            seen.push(i);
            Flow::Continue
        });
        assert_eq!(flow, Flow::Continue);
        assert_eq!(seen, [0, 1, 2, 3]);
        assert_eq!(p.paused_at(), None);
    }

    #[test]
    fn a_pause_holds_the_request_and_its_resume_runs_the_rest() {
        let p = Progress::new();
        let mut seen = Vec::new();
        let flow = p.run(0, 4, |i| {
            seen.push(i);
            if i == 1 { Flow::Pause } else { Flow::Continue }
        });
        assert_eq!((flow, p.paused_at()), (Flow::Pause, Some(1)));
        assert_eq!(seen, [0, 1]);
        assert_eq!(p.resume(), Resume::RunFrom(2));
        let flow = p.run(2, 4, |i| {
            seen.push(i);
            Flow::Continue
        });
        assert_eq!(flow, Flow::Continue);
        assert_eq!(seen, [0, 1, 2, 3]);
        assert_eq!(p.resume(), Resume::Stream, "nobody holds it any more");
    }

    #[test]
    fn the_last_filter_resuming_lets_the_stream_go() {
        let p = Progress::new();
        assert_eq!(
            p.run(0, 2, |i| if i == 1 { Flow::Pause } else { Flow::Continue }),
            Flow::Pause
        );
        assert_eq!(p.resume(), Resume::RunFrom(2));
        let mut called = false;
        let flow = p.run(2, 2, |_| {
            called = true;
            Flow::Pause
        });
        assert_eq!((flow, called), (Flow::Continue, false));
    }

    #[test]
    fn a_resume_from_inside_the_filters_own_call_is_a_continue() {
        let p = Progress::new();
        let mut seen = Vec::new();
        let flow = p.run(0, 3, |i| {
            seen.push(i);
            if i == 0 {
                assert_eq!(p.resume(), Resume::InPass);
                Flow::Pause
            } else {
                Flow::Continue
            }
        });
        assert_eq!(flow, Flow::Continue);
        assert_eq!(seen, [0, 1, 2]);
    }

    #[test]
    fn a_second_pause_after_a_resume_holds_again() {
        // OAuth2 waits for the token endpoint, then the fault filter delays the same request.
        let p = Progress::new();
        assert_eq!(
            p.run(0, 4, |i| if i == 0 { Flow::Pause } else { Flow::Continue }),
            Flow::Pause
        );
        let Resume::RunFrom(from) = p.resume() else {
            panic!()
        };
        assert_eq!(
            p.run(from, 4, |i| if i == 3 {
                Flow::Pause
            } else {
                Flow::Continue
            }),
            Flow::Pause
        );
        assert_eq!(p.paused_at(), Some(3));
        assert_eq!(p.resume(), Resume::RunFrom(4));
    }

    #[test]
    fn responses_go_in_reverse() {
        assert_eq!(response_order(3).collect::<Vec<_>>(), [2, 1, 0]);
        assert_eq!(response_order(0).count(), 0);
    }

    #[cfg(not(target_arch = "wasm32"))]
    mod props {
        use super::*;
        use proptest::prelude::*;
        use std::cell::RefCell;

        /// What a filter does with a request.
        #[derive(Debug, Clone, Copy)]
        enum Does {
            Continue,
            /// Pauses, and lets it go on later (from a tick or a call response).
            PauseThenResume,
            /// Pauses and lets it go on from inside its own call.
            ResumeAtOnce,
            /// Answers the request itself (never lets it go on).
            Reply,
        }

        fn does() -> impl Strategy<Value = Does> {
            prop_oneof![
                Just(Does::Continue),
                Just(Does::PauseThenResume),
                Just(Does::ResumeAtOnce),
                Just(Does::Reply),
            ]
        }

        proptest! {
            #[test]
            fn every_filter_sees_the_request_once_in_order_until_one_answers(
                filters in proptest::collection::vec(does(), 0..6),
            ) {
                let p = Progress::new();
                let seen = RefCell::new(Vec::new());
                let n = filters.len();
                let call = |i: usize| {
                    seen.borrow_mut().push(i);
                    match filters[i] {
                        Does::Continue => Flow::Continue,
                        Does::PauseThenResume | Does::Reply => Flow::Pause,
                        Does::ResumeAtOnce => {
                            assert_eq!(p.resume(), Resume::InPass);
                            Flow::Pause
                        }
                    }
                };
                // The host: the first pass, then each later resume by the holding filter.
                let mut flow = p.run(0, n, call);
                let mut stream_resumed = flow == Flow::Continue;
                while flow == Flow::Pause {
                    let holder = p.paused_at().unwrap();
                    if matches!(filters[holder], Does::Reply) {
                        break;
                    }
                    match p.resume() {
                        Resume::RunFrom(from) => {
                            flow = p.run(from, n, call);
                            stream_resumed = flow == Flow::Continue;
                        }
                        other => prop_assert!(false, "{:?}", other),
                    }
                }
                let answered = filters.iter().position(|d| matches!(d, Does::Reply));
                let last = answered.unwrap_or(n.saturating_sub(1));
                let want: Vec<usize> = if n == 0 { vec![] } else { (0..=last).collect() };
                prop_assert_eq!(seen.into_inner(), want);
                prop_assert_eq!(stream_resumed, answered.is_none());
            }
        }
    }
}
