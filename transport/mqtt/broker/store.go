package broker

import (
	"strconv"
	"strings"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/hooks/storage"
	"github.com/mochi-mqtt/server/v2/hooks/storage/bolt"
)

// boltStore is mochi's bbolt storage hook with one fix: mochi v2.7.9's bolt hook stores
// in-flight messages without their packet id (its badger and pebble hooks do store it), so
// after a restart every queued QoS 1/2 message comes back with id 0 and resending it fails
// with "protocol violation: missing packet id", killing the session it was queued for. The id
// is also the tail of the message's storage key ("IF_<client id>:<packet id>"), and
// StoredInflightMessages takes it back from there.
type boltStore struct {
	*bolt.Hook
}

var _ mqtt.Hook = boltStore{}

// StoredInflightMessages returns the persisted in-flight messages with their packet ids.
func (s boltStore) StoredInflightMessages() ([]storage.Message, error) {
	msgs, err := s.Hook.StoredInflightMessages()
	if err != nil {
		return nil, err
	}
	out := msgs[:0]
	for _, m := range msgs {
		if m.PacketID == 0 {
			i := strings.LastIndexByte(m.ID, ':')
			id, err := strconv.ParseUint(m.ID[i+1:], 10, 16)
			if i < 0 || err != nil || id == 0 {
				s.Log.Warn("broker: dropping stored in-flight message without packet id", "client", m.Client, "key", clip(m.ID))
				continue
			}
			m.PacketID = uint16(id)
		}
		out = append(out, m)
	}
	return out, nil
}
