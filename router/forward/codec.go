package forward

import (
	"fmt"

	"google.golang.org/grpc"
	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/proto"
)

// Frame is one gRPC message as it travels on the wire: the serialized
// payload, never decoded by the forwarder.
type Frame struct {
	Payload []byte
}

// codecName is the name the codecs report. It is "proto" so that the
// content type on the wire (application/grpc+proto) is what the backends
// and clients expect: the frames are protobuf, the forwarder just does not
// look inside them.
const codecName = "proto"

// Codec is a grpc encoding.Codec that passes *Frame values through
// untouched and encodes anything else as protobuf, so that a router's
// grpc.Server can force it (grpc.ForceServerCodec(forward.Codec{})) and
// still serve its own proto services next to the forwarded ones.
//
// It is never registered globally: install it with ServerOption, and the
// forwarder uses it on backend calls through grpc.ForceCodecV2.
type Codec struct{}

var _ encoding.Codec = Codec{}

// Marshal returns a frame's payload as is, or v encoded as protobuf.
func (Codec) Marshal(v any) ([]byte, error) {
	switch m := v.(type) {
	case *Frame:
		return m.Payload, nil
	case proto.Message:
		return proto.Marshal(m)
	}
	return nil, fmt.Errorf("forward: cannot marshal %T", v)
}

// Unmarshal stores data in a frame (gRPC hands the v1 codec a buffer of
// its own, so keeping it is safe), or decodes it into a proto message.
func (Codec) Unmarshal(data []byte, v any) error {
	switch m := v.(type) {
	case *Frame:
		m.Payload = data
		return nil
	case proto.Message:
		return proto.Unmarshal(data, m)
	}
	return fmt.Errorf("forward: cannot unmarshal into %T", v)
}

// Name implements encoding.Codec.
func (Codec) Name() string { return codecName }

// ServerOption is grpc.ForceServerCodec(Codec{}): the option that makes a
// router's grpc.Server receive raw frames for the forwarded services (its
// own services still get protobuf messages).
func ServerOption() grpc.ServerOption { return grpc.ForceServerCodec(Codec{}) }

// codecV2 is the CodecV2 form of Codec used on backend calls.
type codecV2 struct{}

var _ encoding.CodecV2 = codecV2{}

func (codecV2) Marshal(v any) (mem.BufferSlice, error) {
	b, err := Codec{}.Marshal(v)
	if err != nil {
		return nil, err
	}
	return mem.BufferSlice{mem.SliceBuffer(b)}, nil
}

func (codecV2) Unmarshal(data mem.BufferSlice, v any) error {
	// Materialize copies: data is freed when Unmarshal returns.
	return Codec{}.Unmarshal(data.Materialize(), v)
}

func (codecV2) Name() string { return codecName }
