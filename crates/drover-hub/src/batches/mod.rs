//! Batches (OpenAI's Batch API), the pure pieces the batch routes and the
//! runner call: [`input`] checks a batch's input file whole and splits it
//! into the requests it will run, one job a line, each routed by its own
//! model.

pub mod input;
