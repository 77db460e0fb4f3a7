package smsc

// SetAfterRecord makes o call f between each recorder commit and the
// emission of its changes (set before Run).
func SetAfterRecord(o *Outbox, f func()) { o.afterRecord = f }
