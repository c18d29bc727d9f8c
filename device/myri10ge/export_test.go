package myri10ge

// RxHoldFrames is how many frames a slice's receive FIFO holds, for the
// external tests that fill it.
const RxHoldFrames = rxHoldFrames
