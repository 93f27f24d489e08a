package provider

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/hashicorp/terraform-plugin-framework/datasource"
	"github.com/hashicorp/terraform-plugin-framework/path"
	"github.com/hashicorp/terraform-plugin-framework/provider"
	"github.com/hashicorp/terraform-plugin-framework/provider/schema"
	"github.com/hashicorp/terraform-plugin-framework/resource"
	"github.com/hashicorp/terraform-plugin-framework/types"
	"google.golang.org/grpc"

	goclient "github.com/cellplane/cellplane/client"
	"github.com/cellplane/cellplane/internal/dial"
	"github.com/cellplane/cellplane/internal/pki"
	cpv1 "github.com/cellplane/cellplane/proto/cellplane/controlplane/v1"
)

// Address is the provider's registry address (source = "cellplane/cellplane").
const Address = "registry.terraform.io/cellplane/cellplane"

// Defaults of the provider block.
const (
	DefaultCallTimeout             = 10 * time.Second
	DefaultMaxConcurrentOperations = 4
)

// New returns the provider factory for version.
func New(version string) func() provider.Provider {
	return func() provider.Provider { return &cellplaneProvider{version: version} }
}

type cellplaneProvider struct {
	version string

	// clients are the connections Configure made, one per distinct
	// settings: Terraform configures a provider once per run, but a test
	// harness configures the same instance at every step.
	mu      sync.Mutex
	clients map[settings]*apiClient
}

// close closes every connection (tests; a provider process just exits).
func (p *cellplaneProvider) close() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for k, c := range p.clients {
		_ = c.conn.Close()
		delete(p.clients, k)
	}
}

type providerModel struct {
	Endpoint                types.String `tfsdk:"endpoint"`
	ConfigFile              types.String `tfsdk:"config_file"`
	TLSCAFile               types.String `tfsdk:"tls_ca_file"`
	TLSCertFile             types.String `tfsdk:"tls_cert_file"`
	TLSKeyFile              types.String `tfsdk:"tls_key_file"`
	CallTimeout             types.String `tfsdk:"call_timeout"`
	MaxConcurrentOperations types.Int64  `tfsdk:"max_concurrent_operations"`
}

func (p *cellplaneProvider) Metadata(_ context.Context, _ provider.MetadataRequest, resp *provider.MetadataResponse) {
	resp.TypeName = "cellplane"
	resp.Version = p.version
}

func (p *cellplaneProvider) Schema(_ context.Context, _ provider.SchemaRequest, resp *provider.SchemaResponse) {
	resp.Schema = schema.Schema{
		Description: "Manages a cellplane control plane (regions, cells, tenants, API keys, the failover policy). The connection settings resolve like cellctl's: " +
			"endpoint, else CELLPLANE_CONTROLPLANE, else the client configuration file (config_file, else CELLPLANE_CONFIG), else 127.0.0.1:7000.",
		Attributes: map[string]schema.Attribute{
			"endpoint": schema.StringAttribute{Optional: true,
				Description: "host:port of the control plane's gRPC API (default: CELLPLANE_CONTROLPLANE, the client configuration file's controlplane, 127.0.0.1:7000)."},
			"config_file": schema.StringAttribute{Optional: true,
				Description: "The client configuration file (controlplane, ca, cert, key); default CELLPLANE_CONFIG."},
			"tls_ca_file": schema.StringAttribute{Optional: true,
				Description: "PEM CA of the control plane's certificate: TLS. With tls_cert_file and tls_key_file (an operator certificate), mutual TLS. Replaces the file's TLS material."},
			"tls_cert_file": schema.StringAttribute{Optional: true, Description: "PEM operator certificate (needs tls_ca_file and tls_key_file)."},
			"tls_key_file":  schema.StringAttribute{Optional: true, Description: "PEM private key of tls_cert_file."},
			"call_timeout": schema.StringAttribute{Optional: true,
				Description: "Time limit of each short call to the control plane (a Go duration, default 10s); long operations use the resources' timeouts."},
			"max_concurrent_operations": schema.Int64Attribute{Optional: true,
				Description: "At most this many long operations (tenant create, delete, standby changes) at once, whatever Terraform's -parallelism (default 4)."},
		},
	}
}

// settings are the provider block's values, checked.
type settings struct {
	target      goclient.ControlPlaneTarget
	callTimeout time.Duration
	maxOps      int
}

// resolveSettings applies the defaults and checks the provider block.
func resolveSettings(m providerModel) (settings, error) {
	s := settings{callTimeout: DefaultCallTimeout, maxOps: DefaultMaxConcurrentOperations}
	t := goclient.ControlPlaneTarget{Addr: m.Endpoint.ValueString(), CA: m.TLSCAFile.ValueString(), Cert: m.TLSCertFile.ValueString(), Key: m.TLSKeyFile.ValueString()}
	addrSet := t.Addr != ""
	tlsSet := t.CA != "" || t.Cert != "" || t.Key != ""
	t, err := goclient.ResolveControlPlaneTarget(t, addrSet, tlsSet, m.ConfigFile.ValueString())
	if err != nil {
		return s, err
	}
	if (t.Cert == "") != (t.Key == "") {
		return s, fmt.Errorf("tls_cert_file and tls_key_file go together")
	}
	if t.Cert != "" && t.CA == "" {
		return s, fmt.Errorf("tls_cert_file needs tls_ca_file")
	}
	s.target = t
	if v := m.CallTimeout.ValueString(); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d <= 0 {
			return s, fmt.Errorf("call_timeout %q: want a positive duration such as 10s", v)
		}
		s.callTimeout = d
	}
	if !m.MaxConcurrentOperations.IsNull() && !m.MaxConcurrentOperations.IsUnknown() {
		n := m.MaxConcurrentOperations.ValueInt64()
		if n < 1 || n > 1000 {
			return s, fmt.Errorf("max_concurrent_operations %d: want 1..1000", n)
		}
		s.maxOps = int(n)
	}
	return s, nil
}

func (p *cellplaneProvider) Configure(ctx context.Context, req provider.ConfigureRequest, resp *provider.ConfigureResponse) {
	var m providerModel
	resp.Diagnostics.Append(req.Config.Get(ctx, &m)...)
	if resp.Diagnostics.HasError() {
		return
	}
	s, err := resolveSettings(m)
	if err != nil {
		resp.Diagnostics.AddError("Invalid cellplane provider configuration", err.Error())
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if c, ok := p.clients[s]; ok {
		resp.ResourceData, resp.DataSourceData = c, c
		return
	}
	creds, err := s.target.Credentials(pki.KindControlPlane)
	if err != nil {
		resp.Diagnostics.AddAttributeError(path.Root("tls_cert_file"), "Cannot load the TLS material", err.Error())
		return
	}
	// The connection is lazy: validate and plan of a configuration with
	// no resources work with no control plane.
	conn, err := dial.New(s.target.Addr, dial.Config{Credentials: creds}.With(grpc.WithDefaultCallOptions(grpc.WaitForReady(false))))
	if err != nil {
		resp.Diagnostics.AddAttributeError(path.Root("endpoint"), "Invalid endpoint", err.Error())
		return
	}
	c := &apiClient{api: cpv1.NewControlPlaneServiceClient(conn), conn: conn, addr: s.target.Addr, callTimeout: s.callTimeout, ops: make(chan struct{}, s.maxOps)}
	if p.clients == nil {
		p.clients = make(map[settings]*apiClient)
	}
	p.clients[s] = c
	resp.ResourceData, resp.DataSourceData = c, c
}

func (p *cellplaneProvider) Resources(context.Context) []func() resource.Resource {
	return []func() resource.Resource{newRegionResource, newCellResource, newTenantResource, newAPIKeyResource, newFailoverPolicyResource}
}

func (p *cellplaneProvider) DataSources(context.Context) []func() datasource.DataSource {
	return []func() datasource.DataSource{newStatusDataSource, newRegionsDataSource, newRegionDataSource, newCellsDataSource, newCellDataSource,
		newTenantDataSource, newTenantsDataSource, newRegistryDataSource, newMovesDataSource, newFailoversDataSource}
}
