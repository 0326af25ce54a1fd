//! Batches (OpenAI's Batch API), the pure pieces the batch routes and the
//! runner call: [`input`] checks a batch's input file whole and splits it
//! into the requests it will run, one job a line, each routed by its own
//! model; [`output`] writes the lines of its output and error files;
//! [`finish`] ends a batch whose lines have all ended, with those files;
//! [`view`] is a stored batch as the API shows it.

pub mod finish;
pub mod input;
pub mod output;
pub mod view;
