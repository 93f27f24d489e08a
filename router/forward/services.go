package forward

import (
	"slices"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/descriptorpb"

	contextv1 "github.com/cellplane/cellplane/proto/cellplane/context/v1"
	routerv1 "github.com/cellplane/cellplane/proto/cellplane/router/v1"
)

// The forwarded services must be linked into the binary; ContextService
// always is.
var _ = contextv1.ContextService_ServiceDesc

// TenantRoutedServices returns the full names of every service linked into
// this binary whose descriptor carries the option
// (cellplane.router.v1.tenant_routed) = true, sorted. It is the default of
// Config.Services: marking a new service is all it takes to route it.
func TenantRoutedServices() []string {
	var out []string
	protoregistry.GlobalFiles.RangeFiles(func(fd protoreflect.FileDescriptor) bool {
		svcs := fd.Services()
		for i := range svcs.Len() {
			sd := svcs.Get(i)
			opts, ok := sd.Options().(*descriptorpb.ServiceOptions)
			if ok && opts != nil && proto.GetExtension(opts, routerv1.E_TenantRouted).(bool) {
				out = append(out, string(sd.FullName()))
			}
		}
		return true
	})
	slices.Sort(out)
	return out
}
