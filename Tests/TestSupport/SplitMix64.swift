import Apply

/// The fixtures' generator is Apply's (one copy, shared with the rank finder and the demo editor).
public typealias SplitMix64 = Apply.SplitMix64
