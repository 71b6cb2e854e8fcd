// Package krl writes OpenSSH key revocation lists (KRLs), the binary
// format that sshd reads from the file named by RevokedKeys and that
// ssh-keygen -Q checks keys against. The format is described in OpenSSH's
// PROTOCOL.krl.
//
// Only what the issuer needs is written: certificates revoked by key ID
// and by serial number, under one CA key each. A KRL with no sections
// revokes nothing, which is what sshd needs to find in a RevokedKeys file
// when nothing is revoked: a missing file makes it refuse every key.
package krl

import (
	"cmp"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"golang.org/x/crypto/ssh"
)

const (
	magic         = 0x5353484b524c0a00 // "SSHKRL\n\0"
	formatVersion = 1

	sectionCertificates = 1

	certSerialList = 0x20
	certKeyID      = 0x23
)

// CertRevocation revokes certificates signed by one CA key.
type CertRevocation struct {
	// CA is the key that signed the revoked certificates. It must be set:
	// a KRL may revoke under any CA, but the issuer never needs to.
	CA ssh.PublicKey
	// KeyIDs are the key IDs of the revoked certificates. Order and
	// duplicates do not matter.
	KeyIDs []string
	// Serials are the serial numbers of the revoked certificates. Order and
	// duplicates do not matter.
	Serials []uint64
}

// KRL is a key revocation list.
type KRL struct {
	// Version increases each time the list changes, so that a reader can
	// tell a newer list from an older one.
	Version uint64
	// Generated is when the list was made; it is written in whole seconds.
	Generated time.Time
	// Comment is free text, shown by ssh-keygen -Q -l.
	Comment string
	// Certs revoke certificates, one entry per CA key.
	Certs []CertRevocation
}

// Marshal returns k in the binary KRL format. Key IDs and serials are
// written sorted and without duplicates, so that the same content always
// has the same encoding. A key ID may not be empty nor hold a NUL byte,
// which OpenSSH would reject.
func (k *KRL) Marshal() ([]byte, error) {
	var b []byte
	b = binary.BigEndian.AppendUint64(b, magic)
	b = binary.BigEndian.AppendUint32(b, formatVersion)
	b = binary.BigEndian.AppendUint64(b, k.Version)
	var generated uint64
	if !k.Generated.IsZero() && k.Generated.Unix() > 0 {
		generated = uint64(k.Generated.Unix())
	}
	b = binary.BigEndian.AppendUint64(b, generated)
	b = binary.BigEndian.AppendUint64(b, 0) // flags: none defined
	b = appendString(b, nil)                // reserved
	b = appendString(b, []byte(k.Comment))
	for i, c := range k.Certs {
		section, err := c.marshal()
		if err != nil {
			return nil, fmt.Errorf("krl: certificates %d: %w", i, err)
		}
		b = append(b, sectionCertificates)
		b = appendString(b, section)
	}
	return b, nil
}

// marshal returns the body of c's certificates section.
func (c CertRevocation) marshal() ([]byte, error) {
	if c.CA == nil {
		return nil, errors.New("no CA key")
	}
	var b []byte
	b = appendString(b, c.CA.Marshal())
	b = appendString(b, nil) // reserved
	if serials := sortedUnique(c.Serials); len(serials) > 0 {
		var sub []byte
		for _, s := range serials {
			sub = binary.BigEndian.AppendUint64(sub, s)
		}
		b = append(b, certSerialList)
		b = appendString(b, sub)
	}
	if ids := sortedUnique(c.KeyIDs); len(ids) > 0 {
		var sub []byte
		for _, id := range ids {
			if id == "" || strings.IndexByte(id, 0) >= 0 {
				return nil, fmt.Errorf("key ID %q: empty or holds a NUL byte", id)
			}
			sub = appendString(sub, []byte(id))
		}
		b = append(b, certKeyID)
		b = appendString(b, sub)
	}
	return b, nil
}

// appendString appends s as an SSH string: its length as a uint32, then
// its bytes.
func appendString(b, s []byte) []byte {
	b = binary.BigEndian.AppendUint32(b, uint32(len(s)))
	return append(b, s...)
}

func sortedUnique[T cmp.Ordered](in []T) []T {
	out := slices.Clone(in)
	slices.Sort(out)
	return slices.Compact(out)
}

// Check reports whether data is a KRL as sshd reads one: the header of
// format version 1 and sections that each fill their stated length. sshd
// reads a RevokedKeys file without the KRL header as a list of public
// keys, so an empty file or an error page would revoke nothing; a writer
// of RevokedKeys checks what it was sent before it replaces a good list.
func Check(data []byte) error {
	const header = 8 + 4 + 8 + 8 + 8 // magic, format version, version, date, flags
	if len(data) < header || binary.BigEndian.Uint64(data) != magic {
		return errors.New("krl: not an OpenSSH KRL (no SSHKRL header)")
	}
	if v := binary.BigEndian.Uint32(data[8:]); v != formatVersion {
		return fmt.Errorf("krl: format version %d, want %d", v, formatVersion)
	}
	rest := data[header:]
	for _, field := range []string{"reserved", "comment"} {
		var ok bool
		if _, rest, ok = cutString(rest); !ok {
			return fmt.Errorf("krl: truncated %s field", field)
		}
	}
	for len(rest) > 0 {
		typ := rest[0]
		var ok bool
		if _, rest, ok = cutString(rest[1:]); !ok {
			return fmt.Errorf("krl: truncated section of type %d", typ)
		}
	}
	return nil
}

// cutString cuts an SSH string off the front of b.
func cutString(b []byte) (s, rest []byte, ok bool) {
	if len(b) < 4 {
		return nil, nil, false
	}
	n := binary.BigEndian.Uint32(b)
	if uint64(len(b)-4) < uint64(n) {
		return nil, nil, false
	}
	return b[4 : 4+n], b[4+n:], true
}
