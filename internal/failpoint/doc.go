// Package failpoint is a tiny registry of named fault-injection points
// (crash points, finding M10 and scenario S10 of docs/reliability.md).
//
// Code marks a point with Inject:
//
//	if err := failpoint.Inject(failpoint.StoreAfterLogFsync); err != nil {
//		return err
//	}
//
// Points do nothing until a spec enables them, which costs one atomic
// load per Inject. The spec comes from the CELLPLANE_FAILPOINTS
// environment variable, read by EnableFromEnv at a process's start
// (`cellplane cell` calls it), or from Enable in tests:
//
//	CELLPLANE_FAILPOINTS='store/after-log-fsync=crash@20;store/snapshot-persist=sleep(200ms),1'
//
// A spec is entries separated by ';', each
//
//	name=action[@from][,count]
//
// action is one of
//
//	crash        exit the process at once with ExitCode (os.Exit: no deferred
//	             cleanup, no buffered file data flushed — an abrupt crash)
//	error        Inject returns an error wrapping ErrInjected
//	sleep(d)     Inject waits d (a time.ParseDuration string), then returns nil
//	off          nothing
//
// from is the 1-based hit at which the action starts (default 1: the
// first time the point is reached) and count how many hits act (default:
// every hit from then on). Hits are counted per process, so a crash spec
// acts once per process start; a test passes the spec to one child
// process only (platform.Config.ChildEnv).
//
// Names are constants in names.go; Points lists them, and Enable refuses
// a spec naming an unknown point, so a typo cannot silently test nothing.
//
// The registry is process-wide on purpose (the one package-level state the
// house allows here): points sit deep in code paths that take no
// configuration, and a crash spec is about a process, not a component.
// Production never sets the variable; `cellplane cell` logs a warning when
// it is set.
package failpoint
