//! The cue builder on scripted events: the rules one by one, when each cue
//! comes out, translations, the now-showing lines, and the invariants over
//! many generated streams.

use super::*;

fn word(text: &str, start_ms: u64, end_ms: u64) -> Event {
    Event::Token(Token {
        text: text.into(),
        start_ms: Some(start_ms),
        end_ms: Some(end_ms),
        is_final: true,
        ..Token::default()
    })
}

fn said_by(speaker: &str, event: Event) -> Event {
    match event {
        Event::Token(token) => Event::Token(Token {
            speaker: Some(speaker.into()),
            ..token
        }),
        other => other,
    }
}

fn translation(text: &str) -> Event {
    Event::Token(Token {
        text: text.into(),
        is_final: true,
        translation_status: Some("translation".into()),
        ..Token::default()
    })
}

fn partial(text: &str, start_ms: u64) -> Event {
    Event::Partial {
        text: text.into(),
        tokens: vec![Token {
            text: text.into(),
            start_ms: Some(start_ms),
            end_ms: Some(start_ms + 100),
            ..Token::default()
        }],
    }
}

/// An endpoint after which the engine heard `silent_until_ms` of silence.
fn endpoint_until(silent_until_ms: u64) -> Event {
    Event::Endpoint {
        end_ms: None,
        silent_until_ms: Some(silent_until_ms),
    }
}

/// An endpoint that says nothing of the audio after it.
fn endpoint() -> Event {
    Event::Endpoint {
        end_ms: None,
        silent_until_ms: None,
    }
}

fn end(audio_ms: u64) -> Event {
    Event::End {
        audio_ms,
        tokens: 0,
        duration_ms: 0,
        reason: "eof".into(),
    }
}

fn builder() -> CueBuilder {
    CueBuilder::new(CueRules::default(), true)
}

/// Feeds `events`; the cues, each with the index of the event that gave
/// it out.
fn run(builder: &mut CueBuilder, events: &[Event]) -> Vec<(usize, Cue)> {
    let mut out = Vec::new();
    for (at, event) in events.iter().enumerate() {
        let mut made = Made::default();
        builder.feed(event, &mut made);
        out.extend(made.cues.into_iter().map(|cue| (at, cue)));
    }
    out
}

fn cues(events: &[Event]) -> Vec<Cue> {
    run(&mut builder(), events)
        .into_iter()
        .map(|(_, c)| c)
        .collect()
}

fn translations(events: &[Event]) -> Vec<Cue> {
    let mut builder = builder();
    let mut all = Vec::new();
    for event in events {
        let mut made = Made::default();
        builder.feed(event, &mut made);
        all.extend(made.translations);
    }
    all
}

fn cue(start_ms: u64, end_ms: u64, lines: &[&str]) -> Cue {
    Cue {
        start_ms,
        end_ms,
        speaker: None,
        lines: lines.iter().map(|l| (*l).to_owned()).collect(),
    }
}

#[test]
fn an_endpoint_gives_the_cue_out_at_once_held_for_reading() {
    let events = [
        word(" Hello", 500, 800),
        word(" there", 900, 1200),
        endpoint_until(3_200),
        word(" Again", 6_000, 6_400),
        end(9_000),
    ];
    let out = run(&mut builder(), &events);
    // At least a second on screen: the engine heard no word until 3.2 s.
    assert_eq!(out[0], (2, cue(500, 1_500, &["Hello there"])));
    // At the end the audio's end bounds it.
    assert_eq!(out[1], (4, cue(6_000, 7_000, &["Again"])));
    assert_eq!(out.len(), 2);
}

#[test]
fn a_cue_is_held_only_as_far_as_the_silence_is_known() {
    let long = " ".to_owned() + &["word"; 14].join(" ");
    let said = |until| [word(&long, 0, 2_000), until, end(9_000)];
    // 69 characters take 4.06 s to read; the engine heard silence to 3 s.
    assert_eq!(cues(&said(endpoint_until(3_000)))[0].end_ms, 3_000);
    assert_eq!(cues(&said(endpoint_until(8_000)))[0].end_ms, 4_059);
    assert_eq!(cues(&said(endpoint()))[0].end_ms, 2_000, "nothing known");
}

#[test]
fn the_next_word_proves_a_pause_and_bounds_the_hold() {
    let events = [
        word(" one", 0, 300),
        word(" two", 1_600, 1_900),
        word(" three", 2_000, 2_300),
        end(2_300),
    ];
    let out = run(&mut builder(), &events);
    // Given out at the first token after the 1.3 s gap, held up to it.
    assert_eq!(out[0], (1, cue(0, 1_000, &["one"])));
    // At the end, no later than the audio's end.
    assert_eq!(out[1], (3, cue(1_600, 2_300, &["two three"])));
    let tight = [word(" a", 0, 300), word(" b", 1_500, 1_800), end(1_800)];
    assert_eq!(
        cues(&tight)[0].end_ms,
        1_000,
        "a second where the gap allows"
    );
    let close = [
        said_by("1", word(" a", 0, 300)),
        said_by("2", word(" b", 400, 700)),
        end(700),
    ];
    assert_eq!(cues(&close)[0].end_ms, 400, "never past the next word");
}

#[test]
fn a_full_cue_ends_before_the_word_that_does_not_fit() {
    // Words of 9 characters with their space: 4 to a 42-character line.
    let mut events: Vec<Event> = (0..12)
        .map(|i| word(" abcdefgh", i * 300, i * 300 + 250))
        .collect();
    events.push(end(4_000));
    let out = cues(&events);
    assert_eq!(out.len(), 2, "{out:?}");
    assert_eq!(out[0].lines.len(), 2);
    assert!(
        out.iter()
            .flat_map(|c| &c.lines)
            .all(|l| l.chars().count() <= 42)
    );
    assert_eq!(
        out[1].start_ms,
        8 * 300,
        "the ninth word opens the next cue"
    );
    assert!(out[0].end_ms <= out[1].start_ms);
}

#[test]
fn no_cue_runs_past_its_longest() {
    let mut events: Vec<Event> = (0..20)
        .map(|i| word(" a", i * 800, i * 800 + 300))
        .collect();
    events.push(end(16_000));
    for cue in cues(&events) {
        assert!(cue.end_ms - cue.start_ms <= 7_000, "{cue:?}");
    }
}

#[test]
fn a_speaker_change_begins_a_cue_and_the_label_takes_room() {
    let events = [
        said_by("1", word(" Hi", 0, 300)),
        said_by("2", word(" Hello", 400, 700)),
        said_by("2", word(" you", 800, 1_000)),
        end(3_000),
    ];
    let out = cues(&events);
    assert_eq!(out.len(), 2);
    assert_eq!(out[0].speaker.as_deref(), Some("1"));
    assert_eq!(out[1].lines, ["Hello you"]);
    // 33 characters of text fit 42 without a label, not beside "[Speaker 1] ".
    let long = [
        said_by("1", word(" aaaaaaaaaaaaaaaa", 0, 100)),
        said_by("1", word(" bbbbbbbbbbbbbbbb", 200, 300)),
        end(300),
    ];
    assert_eq!(cues(&long)[0].lines.len(), 2);
    let mut unlabelled = CueBuilder::new(CueRules::default(), false);
    assert_eq!(run(&mut unlabelled, &long)[0].1.lines.len(), 1);
}

#[test]
fn pieces_of_a_word_stay_together() {
    let events = [
        word(" Beau", 0, 100),
        word("ti", 100, 200),
        word("ful", 200, 300),
        word("?", 300, 310),
        endpoint_until(2_000),
    ];
    let out = run(&mut builder(), &events);
    assert_eq!(out, [(4, cue(0, 1_000, &["Beautiful?"]))]);
    // A run with no spaces is cut into pieces of a line at most.
    let run_on: Vec<Event> = (0..50)
        .map(|i| word("字", i * 100, i * 100 + 90))
        .chain([end(5_000)])
        .collect();
    let out = cues(&run_on);
    let text: String = out
        .iter()
        .flat_map(|c| c.lines.concat().chars().collect::<Vec<_>>())
        .collect();
    assert_eq!(text.chars().count(), 50);
    assert!(
        out.iter()
            .flat_map(|c| &c.lines)
            .all(|l| l.chars().count() <= 42)
    );
}

#[test]
fn a_word_not_final_yet_proves_the_pause() {
    let events = [
        word(" one", 0, 300),
        partial(" two", 1_000),
        partial(" two", 2_000),
        word(" two", 2_000, 2_300),
        end(2_300),
    ];
    let out = run(&mut builder(), &events);
    assert_eq!(out[0], (2, cue(0, 1_000, &["one"])), "before it is final");
    assert_eq!(out[1].1.start_ms, 2_000);
}

#[test]
fn a_cue_waits_only_for_what_decides_its_end() {
    let events = [word(" one", 0, 300), word(" two", 400, 700)];
    assert!(run(&mut builder(), &events).is_empty(), "it may still grow");
}

#[test]
fn translations_take_their_cues_times() {
    let events = [
        word(" the", 0, 300),
        translation(" le"),
        word(" fox", 400, 700),
        translation(" renard"),
        endpoint(),
        translation(" tard"),
        word(" runs", 3_000, 3_300),
        translation(" court"),
        end(4_000),
    ];
    let spoken = cues(&events);
    let translated = translations(&events);
    assert_eq!(translated.len(), spoken.len());
    for (s, t) in spoken.iter().zip(&translated) {
        assert_eq!((s.start_ms, s.end_ms), (t.start_ms, t.end_ms));
    }
    assert_eq!(translated[0].lines, ["le renard"]);
    assert_eq!(translated[1].lines, ["tard court"], "late, never lost");
}

#[test]
fn a_long_translation_shares_its_cues_time() {
    let long = " ".to_owned() + &["mot"; 40].join(" ");
    let events = [word(" x", 1_000, 2_000), translation(&long), end(9_000)];
    let translated = translations(&events);
    assert!(translated.len() >= 2, "{translated:?}");
    assert_eq!(translated[0].start_ms, 1_000);
    assert_eq!(translated.last().unwrap().end_ms, cues(&events)[0].end_ms);
    for pair in translated.windows(2) {
        assert_eq!(pair[0].end_ms, pair[1].start_ms);
    }
    let words: usize = translated
        .iter()
        .flat_map(|c| &c.lines)
        .map(|l| l.split_whitespace().count())
        .sum();
    assert_eq!(words, 40);
}

#[test]
fn untranslated_words_are_shown_as_spoken_in_the_translation() {
    let none = Event::Token(Token {
        text: " Paris".into(),
        start_ms: Some(0),
        end_ms: Some(300),
        is_final: true,
        translation_status: Some("none".into()),
        ..Token::default()
    });
    assert_eq!(translations(&[none, end(1_000)])[0].lines, ["Paris"]);
}

#[test]
fn the_now_lines_show_the_open_cue_and_the_tail() {
    let mut builder = builder();
    let mut made = Made::default();
    assert_eq!(builder.take_now(), None, "nothing yet");
    builder.feed(&said_by("1", word(" Hello", 0, 300)), &mut made);
    assert_eq!(
        builder.take_now(),
        Some(vec!["[Speaker 1] Hello".to_owned()])
    );
    builder.feed(&partial(" wor", 400), &mut made);
    assert_eq!(
        builder.take_now(),
        Some(vec!["[Speaker 1] Hello wor".to_owned()])
    );
    assert_eq!(builder.take_now(), None, "unchanged");
    builder.feed(&said_by("1", word(" world", 400, 700)), &mut made);
    builder.feed(
        &Event::Partial {
            text: String::new(),
            tokens: Vec::new(),
        },
        &mut made,
    );
    builder.feed(&endpoint(), &mut made);
    assert_eq!(
        builder.take_now(),
        Some(vec!["[Speaker 1] Hello world".to_owned()]),
        "the cue given out stays shown"
    );
    builder.feed(&end(1_000), &mut made);
    assert_eq!(builder.take_now(), Some(Vec::new()), "cleared at the end");
}

/// A tiny deterministic generator, so the invariants meet many streams.
struct XorShift(u64);

impl XorShift {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

#[test]
fn every_word_once_in_order_and_every_rule_holds() {
    let mut rng = XorShift(0x5eed);
    for _ in 0..300 {
        let mut events = Vec::new();
        let mut words = Vec::new();
        let mut at = 0;
        for i in 0..rng.below(80) + 1 {
            at += [50, 100, 200, 1_300, 3_000][rng.below(5) as usize];
            let len = rng.below(12) as usize + 1;
            let text = format!(" {}{i}", "w".repeat(len));
            let end_ms = at + 100 + rng.below(600);
            let speaker = (rng.below(10) == 0).then(|| rng.below(2).to_string());
            words.push((text.trim().to_owned(), at));
            events.push(Event::Token(Token {
                text,
                start_ms: Some(at),
                end_ms: Some(end_ms),
                is_final: true,
                speaker,
                ..Token::default()
            }));
            at = end_ms;
            match rng.below(12) {
                0 => events.push(endpoint()),
                1 => events.push(partial(" next", at + rng.below(2_000))),
                _ => {}
            }
        }
        events.push(end(at + rng.below(3_000)));
        let out = cues(&events);
        let mut next = 0;
        for cue in &out {
            let texts: Vec<&str> = cue
                .lines
                .iter()
                .flat_map(|l| l.split_whitespace())
                .collect();
            assert_eq!(
                cue.start_ms, words[next].1,
                "a cue starts at its first word"
            );
            for text in texts {
                assert_eq!(text, words[next].0, "every word once, in order");
                next += 1;
            }
            assert!(cue.lines.len() <= 2, "{cue:?}");
            let label = cue
                .speaker
                .as_deref()
                .map_or(0, |s| label(s).chars().count());
            assert!(cue.lines[0].chars().count() + label <= 42, "{cue:?}");
            assert!(cue.lines.iter().all(|l| l.chars().count() <= 42), "{cue:?}");
        }
        assert_eq!(next, words.len(), "no word left out");
        for pair in out.windows(2) {
            assert!(pair[0].start_ms < pair[1].start_ms);
        }
    }
}
