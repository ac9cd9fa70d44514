//! The token timeline: one stream's time, whatever upstream session spoke.
//!
//! Every upstream session counts its audio from its own zero; the stream
//! counts from its first audio. [`Timeline::place`] takes one engine update
//! and says what it means on the stream:
//!
//! * its tokens moved onto the stream's timeline, labelled with the upstream
//!   session that recognised them;
//! * final tokens once each, in order: a new session is fed from the covered
//!   offset, which may lie before the end of the last final token given out
//!   (the service's final point can trail its tokens), so what it recognises
//!   again starts before that end, and is dropped by its timestamp;
//! * `<end>`/`<fin>` as `endpoint`/`finalized`, with the end of the last
//!   final token before them, and how far the engine had heard then, short
//!   of the first word not final yet (nothing starts in between);
//! * the non-final tail as a `partial`, only when it changed (an empty one
//!   once its words became final);
//! * the covered offset (raw formats): the stream byte offset before which
//!   every word is final and given out, so a replay may start there. It is
//!   the service's `final_audio_proc_ms`, held short of the first non-final
//!   word (a word is never cut at a seam) and of what was sent.
//!
//! Pure: no I/O, no clock. The session core gives out what it returns.

use crate::audio::AudioFormat;
use crate::engine::Update;
use crate::event::{Event, Token};

/// Byte offsets and stream time of a raw format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Frames {
    /// Bytes in one frame; never 0.
    frame: u64,
    /// Frames a second; never 0.
    rate: u64,
}

impl Frames {
    /// The frame layout of `audio`; `None` for containers (or a degenerate
    /// format, which has no duration either).
    pub(super) fn of(audio: &AudioFormat) -> Option<Frames> {
        let frame = audio.bytes_per_frame()? as u64;
        let rate = u64::from(audio.sample_rate?);
        (frame > 0 && rate > 0).then_some(Frames { frame, rate })
    }

    /// Stream ms at a stream byte offset, rounded down.
    pub(super) fn ms_at(self, offset: u64) -> u64 {
        offset * 1000 / (self.frame * self.rate)
    }

    /// The stream byte offset of the whole frame at or before `ms`.
    pub(super) fn offset_at(self, ms: u64) -> u64 {
        ms * self.rate / 1000 * self.frame
    }
}

/// The upstream session an update came from.
#[derive(Debug, Clone, Copy)]
pub(super) struct Source {
    /// Its 1-based index over the stream.
    pub(super) upstream: u32,
    /// Stream time of its audio zero, ms.
    pub(super) base_ms: u64,
    /// Stream byte offset up to which audio has been sent to it.
    pub(super) sent: u64,
}

/// What one update means on the stream's timeline.
#[derive(Debug, Default, PartialEq)]
pub(super) struct Placed {
    /// The events to give out, in order.
    pub(super) events: Vec<Event>,
    /// Final tokens dropped as already given out (before a seam).
    pub(super) duplicates: usize,
    /// The covered offset this update proves (raw formats); it may be
    /// behind one already known.
    pub(super) covered: Option<u64>,
}

/// The stream's token bookkeeping across upstream sessions.
#[derive(Debug)]
pub(super) struct Timeline {
    /// `None` for containers: no covered offset then.
    frames: Option<Frames>,
    /// Whether the non-final tail is given out.
    partials: bool,
    /// End of the last final token given out. Invariant: final tokens given
    /// out so far all end at or before it (they come in order).
    last_final_end_ms: Option<u64>,
    /// The non-final tail as last given out.
    partial: Vec<Token>,
}

impl Timeline {
    /// An empty timeline for audio laid out as `frames`.
    pub(super) fn new(frames: Option<Frames>, partials: bool) -> Timeline {
        Timeline {
            frames,
            partials,
            last_final_end_ms: None,
            partial: Vec::new(),
        }
    }

    /// Places one update from `source` on the stream's timeline.
    pub(super) fn place(&mut self, update: Update, source: Source) -> Placed {
        let mut placed = Placed::default();
        let mut non_final = Vec::new();
        for mut token in update.tokens {
            token.rebase(source.base_ms);
            token.upstream = Some(source.upstream);
            if !token.is_final {
                if token.text != "<end>" && token.text != "<fin>" {
                    non_final.push(token);
                }
                continue;
            }
            let end_ms = self.last_final_end_ms;
            match token.text.as_str() {
                "<end>" => placed.events.push(Event::Endpoint {
                    end_ms,
                    silent_until_ms: None,
                }),
                "<fin>" => placed.events.push(Event::Finalized {
                    end_ms,
                    silent_until_ms: None,
                }),
                _ => {
                    // Given out already if it starts before the last final's
                    // end. Tokens without times (translations) always pass.
                    if let (Some(start), Some(last_end)) = (token.start_ms, end_ms)
                        && start < last_end
                    {
                        placed.duplicates += 1;
                        continue;
                    }
                    if token.end_ms.is_some() {
                        self.last_final_end_ms = token.end_ms;
                    }
                    placed.events.push(Event::Token(token));
                }
            }
        }
        // What the engine had heard, short of the words not final yet: the
        // next word after an endpoint or a finalization starts there or later.
        let first_non_final = non_final.iter().filter_map(|t| t.start_ms).min();
        let heard_ms = source.base_ms + update.total_audio_proc_ms;
        let silent_until = first_non_final.map_or(heard_ms, |start| heard_ms.min(start));
        for event in &mut placed.events {
            if let Event::Endpoint {
                end_ms,
                silent_until_ms,
            }
            | Event::Finalized {
                end_ms,
                silent_until_ms,
            } = event
            {
                *silent_until_ms = Some(silent_until.max(end_ms.unwrap_or(0)));
            }
        }
        placed.covered = self.frames.map(|frames| {
            let mut covered_ms = source.base_ms + update.final_audio_proc_ms;
            if let Some(start) = first_non_final {
                covered_ms = covered_ms.min(start);
            }
            frames.offset_at(covered_ms).min(source.sent)
        });
        if self.partials && non_final != self.partial {
            let text = non_final.iter().map(|t| t.text.as_str()).collect();
            self.partial = non_final.clone();
            placed.events.push(Event::Partial {
                text,
                tokens: non_final,
            });
        }
        placed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 16 kHz mono pcm_s16le: 32 bytes a ms.
    const PCM: Frames = Frames {
        frame: 2,
        rate: 16_000,
    };

    fn word(text: &str, start_ms: u64, end_ms: u64, is_final: bool) -> Token {
        Token {
            text: text.to_owned(),
            start_ms: Some(start_ms),
            end_ms: Some(end_ms),
            is_final,
            ..Token::default()
        }
    }

    fn marker(text: &str) -> Token {
        Token {
            text: text.to_owned(),
            is_final: true,
            ..Token::default()
        }
    }

    fn update(tokens: Vec<Token>, final_ms: u64, total_ms: u64) -> Update {
        Update {
            tokens,
            final_audio_proc_ms: final_ms,
            total_audio_proc_ms: total_ms,
        }
    }

    /// An upstream session that has been sent everything up to `sent_ms`.
    fn source(upstream: u32, base_ms: u64, sent_ms: u64) -> Source {
        Source {
            upstream,
            base_ms,
            sent: PCM.offset_at(sent_ms),
        }
    }

    /// The final tokens given out: text, start, end, upstream.
    fn finals(placed: &Placed) -> Vec<(&str, u64, u64, u32)> {
        placed
            .events
            .iter()
            .filter_map(|event| match event {
                Event::Token(t) => Some((
                    t.text.as_str(),
                    t.start_ms.unwrap_or_default(),
                    t.end_ms.unwrap_or_default(),
                    t.upstream.unwrap_or_default(),
                )),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn tokens_move_onto_the_streams_timeline() {
        let mut timeline = Timeline::new(Some(PCM), false);
        let placed = timeline.place(
            update(vec![word(" a", 100, 400, true)], 500, 600),
            source(3, 7_000, 7_600),
        );
        assert_eq!(finals(&placed), [(" a", 7_100, 7_400, 3)]);
        assert_eq!(placed.covered, Some(PCM.offset_at(7_500)));
    }

    #[test]
    fn a_replay_drops_what_starts_before_the_last_finals_end() {
        let mut timeline = Timeline::new(Some(PCM), false);
        timeline.place(
            update(
                vec![word(" a", 500, 800, true), word(" b", 1_000, 1_300, true)],
                1_300,
                1_500,
            ),
            source(1, 0, 1_500),
        );
        // The next session was fed from 900 ms: it hears " b" again (and a
        // cut " b" from mid-word would start before 1300 ms too).
        let placed = timeline.place(
            update(
                vec![
                    word(" b", 100, 400, true),
                    word(" b", 399, 400, true),
                    word(" c", 600, 900, true),
                ],
                900,
                1_000,
            ),
            source(2, 900, 1_900),
        );
        assert_eq!(finals(&placed), [(" c", 1_500, 1_800, 2)]);
        assert_eq!(placed.duplicates, 2);
        // A word that starts right at the last end is new.
        let placed = timeline.place(
            update(vec![word(" d", 900, 1_000, true)], 1_000, 1_000),
            source(2, 900, 1_900),
        );
        assert_eq!(finals(&placed), [(" d", 1_800, 1_900, 2)]);
    }

    #[test]
    fn tokens_without_times_are_never_taken_for_duplicates() {
        let mut timeline = Timeline::new(Some(PCM), false);
        let translated = Token {
            text: " hallo".into(),
            is_final: true,
            ..Token::default()
        };
        let placed = timeline.place(
            update(vec![word(" hello", 0, 300, true), translated], 300, 300),
            source(1, 0, 300),
        );
        assert_eq!(placed.events.len(), 2);
        assert_eq!(placed.duplicates, 0);
    }

    #[test]
    fn endpoint_and_finalized_carry_the_last_finals_end() {
        let mut timeline = Timeline::new(Some(PCM), false);
        let placed = timeline.place(update(vec![marker("<end>")], 0, 100), source(1, 0, 100));
        assert_eq!(
            placed.events,
            [Event::Endpoint {
                end_ms: None,
                silent_until_ms: Some(100)
            }]
        );
        let placed = timeline.place(
            update(vec![word(" a", 100, 300, true), marker("<fin>")], 400, 400),
            source(1, 1_000, 1_400),
        );
        assert_eq!(
            placed.events[1],
            Event::Finalized {
                end_ms: Some(1_300),
                silent_until_ms: Some(1_400)
            }
        );
        // A word the engine heard but has not made final yet comes first.
        let placed = timeline.place(
            update(
                vec![
                    word(" b", 500, 700, true),
                    marker("<end>"),
                    word(" c", 1_200, 1_300, false),
                ],
                800,
                1_500,
            ),
            source(1, 1_000, 2_500),
        );
        assert_eq!(
            placed.events[1],
            Event::Endpoint {
                end_ms: Some(1_700),
                silent_until_ms: Some(2_200)
            }
        );
    }

    #[test]
    fn the_covered_offset_stops_at_the_first_non_final_word() {
        let mut timeline = Timeline::new(Some(PCM), false);
        let tokens = vec![
            word(" a", 100, 300, true),
            word(" b", 700, 900, false),
            word(" c", 500, 650, false),
        ];
        let placed = timeline.place(update(tokens, 800, 1_000), source(1, 2_000, 3_000));
        assert_eq!(placed.covered, Some(PCM.offset_at(2_500)));
        // Never past what was sent, whatever the service says.
        let placed = timeline.place(update(vec![], 900, 900), source(1, 2_000, 2_600));
        assert_eq!(placed.covered, Some(PCM.offset_at(2_600)));
    }

    #[test]
    fn the_covered_offset_is_a_whole_frame() {
        // 8 kHz stereo s16: 4-byte frames, 8 frames a ms; 44.1 kHz mono has
        // 44.1 frames a ms, so 1 ms rounds down to 44 frames.
        let stereo = Frames {
            frame: 4,
            rate: 8_000,
        };
        assert_eq!(stereo.offset_at(3), 96);
        let cd = Frames {
            frame: 2,
            rate: 44_100,
        };
        assert_eq!(cd.offset_at(1), 88);
        assert_eq!(cd.ms_at(cd.offset_at(1_000)), 1_000);
        let mut timeline = Timeline::new(Some(cd), false);
        let placed = timeline.place(update(vec![], 1, 1), source(1, 0, 1_000));
        assert_eq!(placed.covered, Some(88));
    }

    #[test]
    fn containers_have_no_covered_offset() {
        let mut timeline = Timeline::new(None, false);
        let placed = timeline.place(
            update(vec![word(" a", 0, 300, true)], 300, 300),
            source(1, 0, 300),
        );
        assert_eq!(placed.covered, None);
        assert_eq!(finals(&placed).len(), 1);
    }

    #[test]
    fn a_partial_is_given_out_only_when_the_tail_changed() {
        let mut timeline = Timeline::new(Some(PCM), true);
        let tail = || vec![word(" a", 100, 300, false)];
        let partials = |placed: &Placed| {
            placed
                .events
                .iter()
                .filter_map(|event| match event {
                    Event::Partial { text, tokens } => Some((text.clone(), tokens.len())),
                    _ => None,
                })
                .collect::<Vec<_>>()
        };
        let placed = timeline.place(update(tail(), 0, 300), source(1, 0, 300));
        assert_eq!(partials(&placed), [(" a".to_owned(), 1)]);
        let placed = timeline.place(update(tail(), 0, 400), source(1, 0, 400));
        assert_eq!(partials(&placed), []);
        // Final now: the token, then an empty tail replacing the last one.
        let placed = timeline.place(
            update(vec![word(" a", 100, 300, true)], 300, 500),
            source(1, 0, 500),
        );
        assert!(matches!(placed.events[0], Event::Token(_)));
        assert_eq!(partials(&placed), [(String::new(), 0)]);
        // Without --partials, never.
        let mut quiet = Timeline::new(Some(PCM), false);
        assert_eq!(
            partials(&quiet.place(update(tail(), 0, 300), source(1, 0, 300))),
            []
        );
    }
}
