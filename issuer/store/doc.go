package store

import (
	"bytes"
	"encoding/json"
	"fmt"
)

// decodeDoc decodes the record data kept under key into v, one of the
// record types, and checks that it is the record of that key. A record
// that another issuer, or a hand, wrote wrong, such as JSON null (which
// decodes to a record of zero values), an array, or the document of
// another instance, is an error that says so, rather than a record that
// the caller would act on: an instance whose document named another would
// have its renewal issue that other's identity.
func decodeDoc(key string, data []byte, v any) error {
	if !isObject(data) {
		return fmt.Errorf("decode: not a JSON object: %.32q", data)
	}
	if err := json.Unmarshal(data, v); err != nil {
		return fmt.Errorf("decode: %w", err)
	}
	var named []string // the keys the record may be kept under
	switch d := v.(type) {
	case *Instance:
		named = []string{d.ID}
	case *Token:
		named = []string{d.Hash}
	case *Resource:
		named = []string{d.Key()}
	case *Node:
		named = []string{d.Instance}
	case *Lock:
		named = []string{d.Bot, d.Instance, d.Token}
	default:
		return nil
	}
	for _, n := range named {
		if n == key {
			return nil
		}
	}
	return fmt.Errorf("decode: the record kept under %q is that of %q", key, named[0])
}

// isObject reports whether data, JSON, is an object.
func isObject(data []byte) bool {
	t := bytes.TrimLeft(data, " \t\r\n")
	return len(t) > 0 && t[0] == '{'
}
