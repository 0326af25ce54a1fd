//! Batches (OpenAI's Batch API), the pure pieces the batch routes and the
//! runner call: [`input`] checks a batch's input file whole and splits it
//! into the requests it will run, one job a line, each routed by its own
//! model; [`output`] writes the lines of its output and error files.

pub mod input;
pub mod output;
