fn main() { eprintln!("b3iqd: being built"); std::process::exit(1); }
