//! The cue builder: the session's events in, subtitle cues out, each as
//! soon as it is complete. Pure: no I/O and no clock; the writer thread
//! renders what it makes ([`super::subtitles`]) and writes it.
//!
//! # Cues
//!
//! A cue holds whole words, in order, on the stream's one timeline: it
//! starts at its first word's `start_ms` and ends at or after its last
//! word's `end_ms`. Final tokens come once each, so every word is in
//! exactly one cue, whatever reconnects, rotations, idle closes or a
//! fallback happened under it. A new cue begins
//!
//! * after an `endpoint`, a `finalized` and at the `end`;
//! * at a pause: a word that starts [`CueRules::pause_ms`] or more after
//!   the previous one ended;
//! * at a change of speaker label (`--diarize`; labels restart with each
//!   upstream session, as the tokens' own do);
//! * when the next word does not fit: more than [`CueRules::lines`] lines
//!   of [`CueRules::line_chars`] characters, or more than
//!   [`CueRules::max_ms`] from the cue's start to that word's end.
//!
//! Tokens may be pieces of words: a token that begins with white space
//! begins a word, any other continues the last one. A run without spaces
//! (Chinese, Japanese) is cut into pieces of at most a line, so it can
//! still be broken into lines and cues.
//!
//! # When a cue is complete
//!
//! A cue is given out the moment the rules above can tell where it ends,
//! and no later:
//!
//! * at an `endpoint`, a `finalized` or the `end`;
//! * when the next word's first token starts a pause or a new speaker;
//! * when the next word, once whole (the token after it begins another),
//!   does not fit;
//! * when a word that is not final yet (a `partial` event: with
//!   `--partials` or `--now-file`) begins a pause after the cue's last
//!   word: the pause is proven before that word is final.
//!
//! Only the last word is ever held: until the next token shows whether it
//! was whole.
//!
//! # How long a cue stays
//!
//! A cue wants at least [`CueRules::min_ms`], and as long as its text takes
//! to read at [`CueRules::chars_per_sec`], up to [`CueRules::max_ms`]; it
//! never ends before its last word. It gets that only as far as the audio
//! after its last word is known to hold no word, so cues never overlap: up
//! to the next word's start when the cue ended because of it (final or
//! not); up to the end of the audio at the `end`; up to the endpoint's or
//! finalization's `silent_until_ms` (how far the engine had heard, short of
//! any word not final yet); not at all when nothing is known (an endpoint
//! from a daemon too old to say).
//!
//! # Translations
//!
//! Translated tokens (`translation_status: translation`) have no times of
//! their own. Each belongs to the spoken word it follows, so each source
//! cue has a translation cue with its times: the translations of its
//! words, and its words that need none (`translation_status: none`, said
//! in the target language already) as they are. A translation longer than
//! a cue's lines is shared out over several cues that divide the source
//! cue's time by their length. A translation that comes after its cue was
//! given out (after its endpoint) opens the next translation cue, so none
//! is lost; one left at the end gets the last cue's times.

pub(super) mod layout;
#[cfg(test)]
mod tests;

use crate::event::{Event, Token};

/// The cue rules: the flags' values, checked by [`crate::config`].
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct CueRules {
    /// Characters a line, at most; from 20 on (room for a label and a word).
    pub(crate) line_chars: usize,
    /// Lines a cue, at most; from 1 on.
    pub(crate) lines: usize,
    /// The shortest a cue is held, where the audio allows.
    pub(crate) min_ms: u64,
    /// The longest a cue lasts; at least `min_ms`.
    pub(crate) max_ms: u64,
    /// Silence between words that begins a new cue.
    pub(crate) pause_ms: u64,
    /// Reading speed a cue is held for, characters a second; above 0.
    pub(crate) chars_per_sec: f64,
}

impl Default for CueRules {
    /// The flags' defaults: the usual broadcast rules.
    fn default() -> CueRules {
        use crate::cli as defaults;
        CueRules {
            line_chars: defaults::DEFAULT_CUE_LINE_CHARS,
            lines: defaults::DEFAULT_CUE_LINES,
            min_ms: defaults::DEFAULT_CUE_MIN_DURATION.get().as_millis() as u64,
            max_ms: defaults::DEFAULT_CUE_MAX_DURATION.get().as_millis() as u64,
            pause_ms: defaults::DEFAULT_CUE_PAUSE.get().as_millis() as u64,
            chars_per_sec: f64::from(defaults::DEFAULT_CUE_READING_SPEED),
        }
    }
}

/// One cue, ready to render.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Cue {
    /// Its first word's start, ms on the stream's timeline.
    pub(crate) start_ms: u64,
    /// When it leaves the screen: at or after its last word's end.
    pub(crate) end_ms: u64,
    /// The speaker label of its words (`--diarize`).
    pub(crate) speaker: Option<String>,
    /// Its lines, without the speaker label; never empty.
    pub(crate) lines: Vec<String>,
}

/// What one event completed.
#[derive(Debug, Default)]
pub(crate) struct Made {
    /// Cues of the spoken text, in order.
    pub(crate) cues: Vec<Cue>,
    /// Cues of the translation, in order.
    pub(crate) translations: Vec<Cue>,
}

/// The label shown in front of a cue of `speaker`, where the format shows
/// one in the text (SRT, the now-showing file).
pub(crate) fn label(speaker: &str) -> String {
    format!("[Speaker {speaker}] ")
}

/// One word (or a piece of a run without spaces).
#[derive(Debug, Clone)]
struct Word {
    /// As spoken, with the white space before it.
    text: String,
    start_ms: u64,
    end_ms: u64,
    speaker: Option<String>,
    /// What the translation track shows for it.
    translation: String,
}

/// How far a cue may be held past its last word.
#[derive(Debug, Clone, Copy)]
enum Until {
    /// The next word starts here or later.
    Next(u64),
    /// The audio ends here.
    AudioEnd(u64),
    /// Nothing is known of the audio after the last word.
    Unknown,
}

/// Builds the cues of one stream from its events.
#[derive(Debug)]
pub(crate) struct CueBuilder {
    rules: CueRules,
    /// Whether a speaker's label takes room on a cue's first line.
    label_room: bool,
    /// The words of the open cue, whole. Invariant: they fit the rules
    /// together, and the first starts the cue.
    open: Vec<Word>,
    /// The last word, whole or not: it joins the open cue (or begins the
    /// next) once the next token shows it is whole.
    word: Option<Word>,
    /// A space token came alone: the next token begins a word.
    space: bool,
    /// Translation that came after its cue was given out.
    late: String,
    /// The last cue given out: its times, speaker and lines.
    last: Option<Cue>,
    /// The non-final tail's pieces of spoken text.
    tail: Vec<String>,
    /// The lines the now-showing display last gave out.
    shown: Vec<String>,
}

impl CueBuilder {
    /// A builder for cues under `rules`; `label_room` when the format shows
    /// the speaker label on the first line (SRT, the now-showing file).
    pub(crate) fn new(rules: CueRules, label_room: bool) -> CueBuilder {
        CueBuilder {
            rules,
            label_room,
            open: Vec::new(),
            word: None,
            space: false,
            late: String::new(),
            last: None,
            tail: Vec::new(),
            shown: Vec::new(),
        }
    }

    /// Takes one event; the cues it completed go to `made`.
    pub(crate) fn feed(&mut self, event: &Event, made: &mut Made) {
        match event {
            Event::Token(token) if token.is_final => {
                if token.translation_status.as_deref() == Some("translation") {
                    self.translated(&clean(&token.text));
                } else {
                    self.spoken(token, made);
                }
            }
            Event::Partial { tokens, .. } => self.partial(tokens, made),
            Event::Endpoint {
                silent_until_ms, ..
            }
            | Event::Finalized {
                silent_until_ms, ..
            } => {
                self.complete_word(made);
                let until = silent_until_ms.map_or(Until::Unknown, Until::Next);
                self.close(until, made);
            }
            Event::End { audio_ms, .. } => {
                self.complete_word(made);
                self.close(Until::AudioEnd(*audio_ms), made);
                if !self.late.trim().is_empty()
                    && let Some(last) = &self.last
                {
                    let (start, end, speaker) = (last.start_ms, last.end_ms, last.speaker.clone());
                    let late = std::mem::take(&mut self.late);
                    self.translation_cues(start, end, speaker, &late, made);
                }
                self.last = None;
                self.tail.clear();
            }
            _ => {}
        }
    }

    /// The lines to show now, if they changed since the last call: the open
    /// cue with the non-final tail after it (its last lines, when that runs
    /// past a cue), else the last cue; nothing after the end.
    pub(crate) fn take_now(&mut self) -> Option<Vec<String>> {
        let now = self.now_lines();
        (now != self.shown).then(|| {
            self.shown.clone_from(&now);
            now
        })
    }

    fn now_lines(&self) -> Vec<String> {
        let mut texts: Vec<&str> = self.open.iter().map(|w| w.text.as_str()).collect();
        texts.extend(self.word.iter().map(|w| w.text.as_str()));
        let speaker = self
            .open
            .first()
            .or(self.word.as_ref())
            .and_then(|w| w.speaker.clone());
        let tail: String = self.tail.concat();
        texts.extend(layout::pieces(&tail));
        if texts.is_empty() {
            return self.last.as_ref().map_or_else(Vec::new, |cue| {
                with_label(cue.speaker.as_deref(), cue.lines.clone())
            });
        }
        let (first, rest) = self.widths(speaker.as_deref());
        let mut lines = layout::balance(&texts, first, rest);
        if lines.len() > self.rules.lines {
            lines.drain(..lines.len() - self.rules.lines);
        }
        with_label(speaker.as_deref(), lines)
    }

    /// A final token of spoken text.
    fn spoken(&mut self, token: &Token, made: &mut Made) {
        let text = clean(&token.text);
        if text.trim().is_empty() {
            self.space |= !text.is_empty();
            return;
        }
        let known_end = self.word.as_ref().map(|w| w.end_ms);
        let start_ms = token.start_ms.or(known_end).unwrap_or(0);
        let end_ms = token.end_ms.unwrap_or(start_ms).max(start_ms);
        let untranslated = token.translation_status.as_deref() == Some("none");
        let space = std::mem::take(&mut self.space);
        if let Some(word) = self.word.as_mut()
            && !space
            && !text.starts_with(char::is_whitespace)
            && layout::width(&word.text) + layout::width(&text) <= self.rules.line_chars
        {
            word.text.push_str(&text);
            word.end_ms = word.end_ms.max(end_ms);
            if untranslated {
                word.translation.push_str(&text);
            }
            return;
        }
        self.complete_word(made);
        let text = if space { format!(" {text}") } else { text };
        let word = Word {
            translation: if untranslated {
                text.clone()
            } else {
                String::new()
            },
            text,
            start_ms,
            end_ms,
            speaker: token.speaker.clone(),
        };
        if let Some(last) = self.open.last()
            && (word.start_ms >= last.end_ms + self.rules.pause_ms || word.speaker != last.speaker)
        {
            self.close(Until::Next(word.start_ms), made);
        }
        self.word = Some(word);
    }

    /// A final translated token: it belongs to the spoken word before it.
    fn translated(&mut self, text: &str) {
        match self.word.as_mut().or(self.open.last_mut()) {
            Some(word) => word.translation.push_str(text),
            None => self.late.push_str(text),
        }
    }

    /// The non-final tail: shown, and a proof of a pause when its first
    /// word starts one.
    fn partial(&mut self, tokens: &[Token], made: &mut Made) {
        let spoken = tokens
            .iter()
            .filter(|t| t.translation_status.as_deref() != Some("translation"));
        self.tail = spoken.clone().map(|t| clean(&t.text)).collect();
        let last_end = self.word.as_ref().or(self.open.last()).map(|w| w.end_ms);
        if let Some(first) = spoken.clone().next()
            && first.text.starts_with(char::is_whitespace)
            && let (Some(start), Some(last_end)) = (first.start_ms, last_end)
            && start >= last_end + self.rules.pause_ms
        {
            self.complete_word(made);
            self.close(Until::Next(start), made);
        }
    }

    /// The last word is whole: it joins the open cue, or, if it does not
    /// fit there, closes it and begins the next.
    fn complete_word(&mut self, made: &mut Made) {
        let Some(word) = self.word.take() else {
            return;
        };
        if let (Some(first), Some(last)) = (self.open.first(), self.open.last()) {
            let split = word.start_ms >= last.end_ms + self.rules.pause_ms
                || word.speaker != last.speaker
                || word.end_ms.saturating_sub(first.start_ms) > self.rules.max_ms
                || !self.fits_with(&word);
            if split {
                self.close(Until::Next(word.start_ms), made);
            }
        }
        self.open.push(word);
    }

    /// Whether the open cue still fits its lines with `word` added.
    fn fits_with(&self, word: &Word) -> bool {
        let mut texts: Vec<&str> = self.open.iter().map(|w| w.text.as_str()).collect();
        texts.push(&word.text);
        let speaker = self.open.first().and_then(|w| w.speaker.as_deref());
        let (first, rest) = self.widths(speaker);
        layout::wrap(&texts, first, rest).len() <= self.rules.lines
    }

    /// The widths of a cue's first line and of the others.
    fn widths(&self, speaker: Option<&str>) -> (usize, usize) {
        let rest = self.rules.line_chars;
        match speaker.filter(|_| self.label_room) {
            Some(speaker) => (rest.saturating_sub(layout::width(&label(speaker))), rest),
            None => (rest, rest),
        }
    }

    /// Gives out the open cue, if any, and its translation.
    fn close(&mut self, until: Until, made: &mut Made) {
        let words = std::mem::take(&mut self.open);
        let Some(first) = words.first() else {
            return;
        };
        let speaker = first.speaker.clone();
        let start_ms = first.start_ms;
        let last_end = words.iter().map(|w| w.end_ms).max().unwrap_or(start_ms);
        let texts: Vec<&str> = words.iter().map(|w| w.text.as_str()).collect();
        let (first_width, rest) = self.widths(speaker.as_deref());
        let lines = layout::balance(&texts, first_width, rest);
        let chars: usize = lines.iter().map(|l| layout::width(l)).sum();
        let end_ms = self.hold(start_ms, last_end, chars, until);
        let cue = Cue {
            start_ms,
            end_ms,
            speaker: speaker.clone(),
            lines,
        };
        made.cues.push(cue.clone());
        self.last = Some(cue);
        let mut translation = std::mem::take(&mut self.late);
        for word in &words {
            translation.push_str(&word.translation);
        }
        self.translation_cues(start_ms, end_ms, speaker, &translation, made);
    }

    /// When a cue from `start_ms` whose words end at `last_end`, with
    /// `chars` characters, leaves the screen.
    fn hold(&self, start_ms: u64, last_end: u64, chars: usize, until: Until) -> u64 {
        let rules = &self.rules;
        let reading = (chars as f64 * 1000.0 / rules.chars_per_sec).ceil() as u64;
        let wanted = start_ms + reading.max(rules.min_ms).min(rules.max_ms);
        let allowed = match until {
            Until::Next(start) => start,
            Until::AudioEnd(end) => end,
            Until::Unknown => last_end,
        };
        wanted.min(allowed).max(last_end)
    }

    /// The translation cues for a source cue: one, or several sharing its
    /// time by their length when the text runs past a cue's lines.
    fn translation_cues(
        &self,
        start_ms: u64,
        end_ms: u64,
        speaker: Option<String>,
        text: &str,
        made: &mut Made,
    ) {
        let pieces = layout::pieces(text);
        if pieces.is_empty() {
            return;
        }
        let (first, rest) = self.widths(speaker.as_deref());
        let lines = layout::wrap(&pieces, first, rest);
        let groups: Vec<&[String]> = lines.chunks(self.rules.lines.max(1)).collect();
        if groups.len() == 1 {
            made.translations.push(Cue {
                start_ms,
                end_ms,
                speaker,
                lines: layout::balance(&pieces, first, rest),
            });
            return;
        }
        let total: u64 = lines.iter().map(|l| layout::width(l) as u64).sum();
        let span = end_ms - start_ms;
        let mut done = 0;
        let mut at = start_ms;
        for group in groups {
            done += group.iter().map(|l| layout::width(l) as u64).sum::<u64>();
            let until = start_ms + span * done / total.max(1);
            made.translations.push(Cue {
                start_ms: at,
                end_ms: until,
                speaker: speaker.clone(),
                lines: group.to_vec(),
            });
            at = until;
        }
    }
}

/// `lines` with `speaker`'s label in front of the first.
fn with_label(speaker: Option<&str>, mut lines: Vec<String>) -> Vec<String> {
    if let (Some(speaker), Some(first)) = (speaker, lines.first_mut()) {
        first.insert_str(0, &label(speaker));
    }
    lines
}

/// Token text without line breaks or other control characters, which
/// would end a cue early in both formats.
fn clean(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}
