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
//
// A frame received through the forwarder's codec keeps gRPC's own
// reference-counted buffers (zero copy: the bytes read from one
// connection are the bytes written to the other); Free returns them to
// gRPC's pool once the frame has been sent for the last time. A frame
// built with Payload (or received through the v1 Codec) holds plain
// bytes.
type Frame struct {
	Payload []byte
	// data, when set, is the frame's payload as gRPC's buffers (a
	// reference of its own); Payload then holds nothing or a contiguous
	// copy made by Bytes.
	data mem.BufferSlice
}

// Len is the payload's size in bytes.
func (f *Frame) Len() int {
	if f.data != nil {
		return f.data.Len()
	}
	return len(f.Payload)
}

// Bytes returns the payload as one slice (a copy, made once, for a frame
// held in gRPC's buffers: the forwarder only needs it off the hot path).
func (f *Frame) Bytes() []byte {
	if f.data != nil && f.Payload == nil {
		f.Payload = f.data.Materialize()
	}
	return f.Payload
}

// Free releases the frame's reference to gRPC's buffers (nothing for a
// frame of plain bytes). The frame must not be sent afterwards.
func (f *Frame) Free() {
	if f.data != nil {
		f.data.Free()
		f.data = nil
	}
}

// codecName is the name the codecs report. It is "proto" so that the
// content type on the wire (application/grpc+proto) is what the backends
// and clients expect: the frames are protobuf, the forwarder just does not
// look inside them.
const codecName = "proto"

// Codec is a grpc encoding.Codec that passes *Frame values through
// untouched and encodes anything else as protobuf, so that a router's
// grpc.Server can force it (grpc.ForceServerCodec(forward.Codec{})) and
// still serve its own proto services next to the forwarded ones. The
// forwarder itself uses its CodecV2 form (ServerOption), which avoids the
// copies a v1 codec implies.
//
// It is never registered globally.
type Codec struct{}

var _ encoding.Codec = Codec{}

// Marshal returns a frame's payload as is, or v encoded as protobuf.
func (Codec) Marshal(v any) ([]byte, error) {
	switch m := v.(type) {
	case *Frame:
		return m.Bytes(), nil
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
		m.Free()
		m.Payload = data
		return nil
	case proto.Message:
		return proto.Unmarshal(data, m)
	}
	return fmt.Errorf("forward: cannot unmarshal into %T", v)
}

// Name implements encoding.Codec.
func (Codec) Name() string { return codecName }

// ServerOption is grpc.ForceServerCodecV2 with the forwarder's codec: the
// option that makes a router's grpc.Server receive raw frames, without a
// copy, for the forwarded services (its own services still get protobuf
// messages).
func ServerOption() grpc.ServerOption { return grpc.ForceServerCodecV2(codecV2{}) }

// codecV2 is the zero-copy CodecV2 form of Codec, used on the router's
// server (ServerOption) and on backend calls.
type codecV2 struct{}

var _ encoding.CodecV2 = codecV2{}

// Marshal hands gRPC a frame's buffers with a reference of their own
// (gRPC frees what Marshal returns once written; the frame keeps its
// reference, so a request frame can be sent again on a retry).
func (codecV2) Marshal(v any) (mem.BufferSlice, error) {
	switch m := v.(type) {
	case *Frame:
		if m.data != nil {
			m.data.Ref()
			return m.data, nil
		}
		return mem.BufferSlice{mem.SliceBuffer(m.Payload)}, nil
	case proto.Message:
		b, err := proto.Marshal(m)
		if err != nil {
			return nil, err
		}
		return mem.BufferSlice{mem.SliceBuffer(b)}, nil
	}
	return nil, fmt.Errorf("forward: cannot marshal %T", v)
}

// Unmarshal keeps a reference to gRPC's buffers in a frame (no copy; gRPC
// frees its own reference when Unmarshal returns), or decodes a proto
// message.
func (codecV2) Unmarshal(data mem.BufferSlice, v any) error {
	switch m := v.(type) {
	case *Frame:
		m.Free()
		data.Ref()
		m.data, m.Payload = data, nil
		return nil
	case proto.Message:
		buf := data.MaterializeToBuffer(mem.DefaultBufferPool())
		defer buf.Free()
		return proto.Unmarshal(buf.ReadOnlyData(), m)
	}
	return fmt.Errorf("forward: cannot unmarshal into %T", v)
}

func (codecV2) Name() string { return codecName }
