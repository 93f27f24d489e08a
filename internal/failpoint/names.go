package failpoint

// The store's crash points (cells/store). Each is reached on every node
// that runs the step, leader or follower.
const (
	// StoreBeforeLogFsync: Raft is about to append entries to the log (the
	// append and its fsync have not happened).
	StoreBeforeLogFsync = "store/before-log-fsync"
	// StoreAfterLogFsync: entries were appended to the log and fsynced, not
	// yet acknowledged to Raft (leader: not counted for the commit yet;
	// follower: not yet answered to the leader).
	StoreAfterLogFsync = "store/after-log-fsync"
	// StoreAfterCommitBeforeApply: committed entries reach the state
	// machine, which has not applied them.
	StoreAfterCommitBeforeApply = "store/after-commit-before-apply"
	// StoreAfterApplyBeforeAck: the leader's state machine applied a
	// client's command; its result is not yet returned to the client.
	StoreAfterApplyBeforeAck = "store/after-apply-before-ack"
	// StoreSnapshotPersist: a snapshot is half written to its sink.
	StoreSnapshotPersist = "store/snapshot-persist"
	// StoreSnapshotInstall: a snapshot received from the leader (or read
	// at start) is being restored into the state machine.
	StoreSnapshotInstall = "store/snapshot-install"
)

// Points lists every point Enable accepts.
var Points = []string{
	StoreBeforeLogFsync,
	StoreAfterLogFsync,
	StoreAfterCommitBeforeApply,
	StoreAfterApplyBeforeAck,
	StoreSnapshotPersist,
	StoreSnapshotInstall,
}
