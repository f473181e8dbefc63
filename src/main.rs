//! iguana: as PID 1 it boots the machine (see `boot`); as any other process it
//! is a command-line tool (see `cli`).

mod image;
mod modules;
mod net;

fn main() {}
