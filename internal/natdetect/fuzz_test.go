package natdetect

import (
	"testing"

	"github.com/pion/stun/v3"

	"github.com/peerline/peerline/internal/rfc5780"
)

// FuzzParseDatagram feeds arbitrary bytes to the detector's response parser: no panics,
// and an accepted success response always has a valid mapped address.
func FuzzParseDatagram(f *testing.F) {
	f.Add(stun.MustBuild(stun.TransactionID, stun.BindingSuccess,
		&stun.XORMappedAddress{IP: []byte{203, 0, 113, 5}, Port: 4000},
		&stun.OtherAddress{IP: []byte{192, 0, 2, 2}, Port: 3479}, stun.Fingerprint).Raw)
	f.Add(stun.MustBuild(stun.TransactionID, stun.BindingSuccess,
		&stun.MappedAddress{IP: []byte{203, 0, 113, 5}, Port: 4000}).Raw)
	f.Add(stun.MustBuild(stun.TransactionID, stun.BindingError, stun.CodeUnknownAttribute,
		stun.UnknownAttributes{stun.AttrChangeRequest}).Raw)
	f.Add(stun.MustBuild(stun.TransactionID, stun.BindingRequest, rfc5780.ChangeRequest{ChangeIP: true}, stun.Fingerprint).Raw)
	f.Add([]byte("not a stun message at all"))
	f.Fuzz(func(t *testing.T, b []byte) {
		d, err := parseDatagram(b)
		if err != nil {
			return
		}
		if !d.request && d.errCode == 0 && !d.mapped.IsValid() {
			t.Fatalf("accepted success response without a mapped address: %+v", d)
		}
	})
}
