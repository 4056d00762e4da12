// The label that marks a position as "no loss here" (prompt, padding): the data pipeline writes it and
// the loss graph skips it. -100 is the value PyTorch and Hugging Face use, so labels carry over as they are.
export const IGNORE_INDEX = -100;
