module github.com/mwi-project/mwi

go 1.26.0

require go.etcd.io/bbolt v1.4.3

require (
	github.com/go-chi/chi/v5 v5.5.0
	golang.org/x/crypto v0.58.0
	golang.org/x/sys v0.49.0
	gopkg.in/yaml.v3 v3.0.1
)
