module github.com/mwi-project/mwi

go 1.26.0

require (
	go.etcd.io/bbolt v1.4.3
	golang.org/x/crypto v0.58.0 // indirect
	golang.org/x/sys v0.49.0 // indirect
	gopkg.in/yaml.v3 v3.0.1 // indirect
)
