//! The terminal side of the live view: raw mode on the alternate screen (restored on drop),
//! drawing [`Line`]s in place, and key presses as [`Key`]s.

use std::io::{Stdout, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, Result};
use crossterm::event::{self, Event, KeyCode, KeyEventKind, KeyModifiers};
use crossterm::style::{Attribute, Color, Print, ResetColor, SetAttribute, SetForegroundColor};
use crossterm::{cursor, queue, terminal};

use super::view::{Line, Style};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Key {
    Next,
    Quit,
}

/// The terminal in raw mode on the alternate screen, with a thread reading keys.
pub struct Screen {
    out: Stdout,
    stop: Arc<AtomicBool>,
    pub keys: tokio::sync::mpsc::Receiver<Key>,
}

impl Screen {
    pub fn enter() -> Result<Screen> {
        terminal::enable_raw_mode().context("cannot put the terminal in raw mode")?;
        let mut out = std::io::stdout();
        queue!(out, terminal::EnterAlternateScreen, cursor::Hide)?;
        out.flush()?;
        // Keys typed while the mesh was starting are not meant for the first step.
        while event::poll(Duration::ZERO).unwrap_or(false) {
            let _ = event::read();
        }
        let stop = Arc::new(AtomicBool::new(false));
        let (sender, keys) = tokio::sync::mpsc::channel(16);
        let thread_stop = stop.clone();
        // A plain thread (not spawn_blocking) so that the runtime never waits for it.
        std::thread::spawn(move || {
            while !thread_stop.load(Ordering::Relaxed) {
                if !event::poll(Duration::from_millis(100)).unwrap_or(false) {
                    continue;
                }
                let key = match event::read() {
                    Ok(Event::Key(k)) if k.kind != KeyEventKind::Release => match k.code {
                        KeyCode::Char('c') if k.modifiers.contains(KeyModifiers::CONTROL) => Some(Key::Quit),
                        KeyCode::Char('q') | KeyCode::Esc => Some(Key::Quit),
                        KeyCode::Enter | KeyCode::Char(' ') | KeyCode::Char('n') | KeyCode::Right => Some(Key::Next),
                        _ => None,
                    },
                    Ok(_) => None,
                    Err(_) => Some(Key::Quit),
                };
                if let Some(key) = key {
                    if sender.try_send(key).is_err() && sender.is_closed() {
                        return;
                    }
                }
            }
        });
        Ok(Screen { out, stop, keys })
    }

    /// The terminal's size (columns, rows); 80×24 if it cannot be read.
    pub fn size() -> (usize, usize) {
        terminal::size().map(|(w, h)| (usize::from(w), usize::from(h))).unwrap_or((80, 24))
    }

    /// Draw `lines` from the top-left corner, clearing what they do not cover.
    pub fn draw(&mut self, lines: &[Line]) -> Result<()> {
        let out = &mut self.out;
        for (row, line) in lines.iter().enumerate() {
            queue!(out, cursor::MoveTo(0, u16::try_from(row).unwrap_or(u16::MAX)))?;
            for (text, style) in line {
                let (color, attribute) = look(*style);
                if let Some(color) = color {
                    queue!(out, SetForegroundColor(color))?;
                }
                if let Some(attribute) = attribute {
                    queue!(out, SetAttribute(attribute))?;
                }
                queue!(out, Print(text), SetAttribute(Attribute::Reset), ResetColor)?;
            }
            queue!(out, terminal::Clear(terminal::ClearType::UntilNewLine))?;
        }
        queue!(out, terminal::Clear(terminal::ClearType::FromCursorDown))?;
        out.flush()?;
        Ok(())
    }
}

fn look(style: Style) -> (Option<Color>, Option<Attribute>) {
    match style {
        Style::Plain => (None, None),
        Style::Bold => (None, Some(Attribute::Bold)),
        Style::Dim => (Some(Color::DarkGrey), None),
        Style::Version(0) => (Some(Color::Green), None),
        Style::Version(1) => (Some(Color::Cyan), None),
        Style::Version(2) => (Some(Color::Magenta), None),
        Style::Version(_) => (Some(Color::Blue), None),
        Style::Error => (Some(Color::Red), None),
        Style::Good => (Some(Color::Green), Some(Attribute::Bold)),
        Style::Bad => (Some(Color::Red), Some(Attribute::Bold)),
        Style::Note => (Some(Color::Yellow), None),
    }
}

impl Drop for Screen {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = queue!(self.out, cursor::Show, terminal::LeaveAlternateScreen);
        let _ = self.out.flush();
        let _ = terminal::disable_raw_mode();
    }
}
