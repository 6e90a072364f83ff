package store

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"

	api "github.com/anyscope/anyscope/collector/api/v1"
)

// Agent is a vantage point that uploads results.
type Agent struct {
	ID                  int64
	Name                string
	Latitude, Longitude *float64 // nil when unknown
	Provider, Region    string
	// LastSeen is when the agent last uploaded a batch; LastSeq is the highest
	// sequence number stored for it. An Agent returned by Authenticate may be
	// up to TokenCacheTTL old in these two fields.
	LastSeen *time.Time
	LastSeq  int64
}

// AgentSpec describes a new agent.
type AgentSpec struct {
	Name                string   // 1-63 characters of [A-Za-z0-9._-]
	Latitude, Longitude *float64 // both or neither
	Provider, Region    string   // free text, e.g. "hetzner", "eu-central"
}

// Token describes one of an agent's tokens (never its secret).
type Token struct {
	ID        int64
	CreatedAt time.Time
	ExpiresAt *time.Time
	RevokedAt *time.Time
}

// TokenCacheTTL is how long Authenticate trusts what it read about a token:
// a token revoked or expired by another process stops working within it (at
// once when revoked through this Store).
const TokenCacheTTL = 30 * time.Second

// tokenPrefix starts every token: "ast_<token id>_<secret>", the secret being
// 32 random bytes in unpadded base64url. Only SHA-256 of the secret's bytes
// is stored.
const tokenPrefix = "ast_"

const agentColumns = `a.id, a.name, a.latitude, a.longitude, a.provider, a.region, a.last_seen, a.last_seq`

func scanAgent(row pgx.Row, extra ...any) (Agent, error) {
	var a Agent
	dest := append([]any{&a.ID, &a.Name, &a.Latitude, &a.Longitude, &a.Provider, &a.Region, &a.LastSeen, &a.LastSeq}, extra...)
	err := row.Scan(dest...)
	return a, err
}

func (spec AgentSpec) validate() error {
	if !api.ValidName(spec.Name) {
		return fmt.Errorf("%w: agent name %q: want 1-63 characters of [A-Za-z0-9._-], starting with a letter or digit", ErrInvalid, api.Clip(spec.Name))
	}
	if (spec.Latitude == nil) != (spec.Longitude == nil) {
		return fmt.Errorf("%w: agent %s: give both latitude and longitude, or neither", ErrInvalid, spec.Name)
	}
	if spec.Latitude != nil {
		if lat := *spec.Latitude; math.IsNaN(lat) || lat < -90 || lat > 90 {
			return fmt.Errorf("%w: agent %s: latitude %g out of range -90..90", ErrInvalid, spec.Name, lat)
		}
		if lon := *spec.Longitude; math.IsNaN(lon) || lon < -180 || lon > 180 {
			return fmt.Errorf("%w: agent %s: longitude %g out of range -180..180", ErrInvalid, spec.Name, lon)
		}
	}
	for field, v := range map[string]string{"provider": spec.Provider, "region": spec.Region} {
		if err := api.CheckText(field, v, api.MaxStringLen); err != nil {
			return fmt.Errorf("agent %s: %w", spec.Name, err)
		}
	}
	return nil
}

// AddAgent registers an agent and returns it with its first token, which is
// shown only now. ErrExists if the name is taken.
func (s *Store) AddAgent(ctx context.Context, spec AgentSpec) (Agent, string, error) {
	const op = "store: add agent"
	if err := spec.validate(); err != nil {
		return Agent{}, "", fmt.Errorf("%s: %w", op, err)
	}
	var (
		a     Agent
		token string
	)
	err := pgx.BeginFunc(ctx, s.db, func(tx pgx.Tx) error {
		var err error
		a, err = scanAgent(tx.QueryRow(ctx, `
			INSERT INTO agents AS a (name, latitude, longitude, provider, region)
			VALUES ($1, $2, $3, $4, $5)
			RETURNING `+agentColumns,
			spec.Name, spec.Latitude, spec.Longitude, spec.Provider, spec.Region))
		if err != nil {
			return s.translate("insert", err)
		}
		token, err = insertToken(ctx, tx, a.ID, nil)
		return err
	})
	if errors.Is(err, ErrExists) {
		return Agent{}, "", fmt.Errorf("%s: agent %q: %w", op, spec.Name, ErrExists)
	}
	if err != nil {
		return Agent{}, "", s.translate(op, err)
	}
	return a, token, nil
}

// AddToken gives the agent another token, e.g. to rotate: deploy the new one,
// then revoke the old one (RevokeToken). expires nil: valid until revoked.
func (s *Store) AddToken(ctx context.Context, agentName string, expires *time.Time) (string, error) {
	const op = "store: add token"
	if expires != nil && !expires.After(s.now()) {
		return "", fmt.Errorf("%s: %w: expiry %s is in the past", op, ErrInvalid, expires.UTC().Format(time.RFC3339))
	}
	a, err := s.AgentByName(ctx, agentName)
	if err != nil {
		return "", fmt.Errorf("%s: %w", op, err)
	}
	token, err := insertToken(ctx, s.db, a.ID, expires)
	return token, s.translate(op, err)
}

func insertToken(ctx context.Context, db DBTX, agentID int64, expires *time.Time) (string, error) {
	secret := make([]byte, 32)
	rand.Read(secret) // never fails (crypto/rand panics instead)
	hash := sha256.Sum256(secret)
	var id int64
	err := db.QueryRow(ctx, `INSERT INTO agent_tokens (agent_id, token_hash, expires_at) VALUES ($1, $2, $3) RETURNING id`,
		agentID, hash[:], expires).Scan(&id)
	if err != nil {
		return "", translate("insert token", err)
	}
	return tokenPrefix + strconv.FormatInt(id, 10) + "_" + base64.RawURLEncoding.EncodeToString(secret), nil
}

// Tokens lists the agent's tokens, oldest first.
func (s *Store) Tokens(ctx context.Context, agentName string) ([]Token, error) {
	const op = "store: tokens"
	a, err := s.AgentByName(ctx, agentName)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", op, err)
	}
	rows, err := s.db.Query(ctx, `SELECT id, created_at, expires_at, revoked_at FROM agent_tokens WHERE agent_id = $1 ORDER BY id`, a.ID)
	if err != nil {
		return nil, s.translate(op, err)
	}
	ts, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (Token, error) {
		var t Token
		err := r.Scan(&t.ID, &t.CreatedAt, &t.ExpiresAt, &t.RevokedAt)
		return t, err
	})
	return ts, s.translate(op, err)
}

// RevokeTokens revokes every token of the agent.
func (s *Store) RevokeTokens(ctx context.Context, agentName string) error {
	return s.revoke(ctx, agentName, 0)
}

// RevokeToken revokes one token of the agent (its id is the number in
// "ast_<id>_…"). ErrNotFound if the agent has no such token.
func (s *Store) RevokeToken(ctx context.Context, agentName string, tokenID int64) error {
	return s.revoke(ctx, agentName, tokenID)
}

func (s *Store) revoke(ctx context.Context, agentName string, tokenID int64) error {
	const op = "store: revoke tokens"
	a, err := s.AgentByName(ctx, agentName)
	if err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	tag, err := s.db.Exec(ctx, `
		UPDATE agent_tokens SET revoked_at = coalesce(revoked_at, now())
		WHERE agent_id = $1 AND ($2::bigint = 0 OR id = $2::bigint)`, a.ID, tokenID)
	if err != nil {
		return s.translate(op, err)
	}
	s.tokens.forget(a.ID)
	if tokenID != 0 && tag.RowsAffected() == 0 {
		return fmt.Errorf("%s: agent %s has no token %d: %w", op, agentName, tokenID, ErrNotFound)
	}
	return nil
}

// Authenticate returns the agent a bearer token belongs to. Any problem with
// the token (malformed, unknown, wrong secret, revoked, expired) is
// ErrUnauthorized without detail; database trouble is reported as such.
func (s *Store) Authenticate(ctx context.Context, token string) (Agent, error) {
	id, secret, ok := parseToken(token)
	if !ok {
		return Agent{}, ErrUnauthorized
	}
	hash := sha256.Sum256(secret)
	now := s.now()
	e, ok := s.tokens.get(id, now)
	if !ok {
		var err error
		e, err = s.loadToken(ctx, id)
		if errors.Is(err, ErrNotFound) {
			return Agent{}, ErrUnauthorized
		}
		if err != nil {
			return Agent{}, err
		}
		e.fetched = now
		s.tokens.put(id, e)
	}
	if subtle.ConstantTimeCompare(hash[:], e.hash[:]) != 1 {
		return Agent{}, ErrUnauthorized
	}
	if e.expires != nil && !now.Before(*e.expires) {
		return Agent{}, ErrUnauthorized
	}
	return e.agent, nil
}

func (s *Store) loadToken(ctx context.Context, id int64) (cachedToken, error) {
	var (
		e    cachedToken
		hash []byte
	)
	a, err := scanAgent(s.db.QueryRow(ctx, `
		SELECT `+agentColumns+`, t.token_hash, t.expires_at
		FROM agent_tokens t JOIN agents a ON a.id = t.agent_id
		WHERE t.id = $1 AND t.revoked_at IS NULL AND (t.expires_at IS NULL OR t.expires_at > now())`, id),
		&hash, &e.expires)
	if err != nil {
		return e, s.translate("store: authenticate", err)
	}
	if len(hash) != len(e.hash) {
		return e, fmt.Errorf("store: authenticate: token %d has a hash of %d bytes", id, len(hash))
	}
	copy(e.hash[:], hash)
	e.agent = a
	return e, nil
}

// parseToken splits "ast_<id>_<secret>" and decodes the secret.
func parseToken(token string) (id int64, secret []byte, ok bool) {
	rest, ok := strings.CutPrefix(token, tokenPrefix)
	if !ok {
		return 0, nil, false
	}
	ids, enc, ok := strings.Cut(rest, "_")
	if !ok || ids == "" || len(ids) > 18 || strings.Trim(ids, "0123456789") != "" {
		return 0, nil, false
	}
	id, err := strconv.ParseInt(ids, 10, 64)
	if err != nil || id <= 0 {
		return 0, nil, false
	}
	secret, err = base64.RawURLEncoding.Strict().DecodeString(enc)
	if err != nil || len(secret) != 32 {
		return 0, nil, false
	}
	return id, secret, true
}

// tokenCache remembers valid tokens for TokenCacheTTL so a busy collector
// does not ask the database on every request.
type tokenCache struct {
	mu sync.Mutex
	m  map[int64]cachedToken
}

type cachedToken struct {
	hash    [sha256.Size]byte
	agent   Agent
	expires *time.Time
	fetched time.Time
}

const tokenCacheMax = 10000

func (c *tokenCache) get(id int64, now time.Time) (cachedToken, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.m[id]
	if !ok || now.Sub(e.fetched) >= TokenCacheTTL || now.Before(e.fetched) {
		return cachedToken{}, false
	}
	return e, true
}

func (c *tokenCache) put(id int64, e cachedToken) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.m) >= tokenCacheMax {
		for k, v := range c.m {
			if e.fetched.Sub(v.fetched) >= TokenCacheTTL {
				delete(c.m, k)
			}
		}
		for k := range c.m { // still full: drop any
			if len(c.m) < tokenCacheMax {
				break
			}
			delete(c.m, k)
		}
	}
	c.m[id] = e
}

func (c *tokenCache) forget(agentID int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for k, v := range c.m {
		if v.agent.ID == agentID {
			delete(c.m, k)
		}
	}
}

// Agents lists every agent by name.
func (s *Store) Agents(ctx context.Context) ([]Agent, error) {
	rows, err := s.db.Query(ctx, `SELECT `+agentColumns+` FROM agents a ORDER BY a.name`)
	if err != nil {
		return nil, s.translate("store: agents", err)
	}
	as, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (Agent, error) { return scanAgent(r) })
	return as, s.translate("store: agents", err)
}

// AgentByName returns the named agent, or ErrNotFound.
func (s *Store) AgentByName(ctx context.Context, name string) (Agent, error) {
	a, err := scanAgent(s.db.QueryRow(ctx, `SELECT `+agentColumns+` FROM agents a WHERE a.name = $1`, name))
	if errors.Is(err, pgx.ErrNoRows) {
		return Agent{}, fmt.Errorf("agent %q: %w", api.Clip(name), ErrNotFound)
	}
	return a, s.translate("store: agent", err)
}

// Hello records that an agent started: when loc is not nil, its location
// (as its own configuration states it) replaces the registered one. It
// returns the agent as stored, with its current LastSeq.
func (s *Store) Hello(ctx context.Context, agentID int64, loc *api.Location) (Agent, error) {
	const op = "store: hello"
	var row pgx.Row
	if loc != nil {
		for field, v := range map[string]string{"provider": loc.Provider, "region": loc.Region} {
			if err := api.CheckText(field, v, api.MaxStringLen); err != nil {
				return Agent{}, err
			}
		}
		row = s.db.QueryRow(ctx, `UPDATE agents a SET latitude = $2, longitude = $3, provider = $4, region = $5
			WHERE a.id = $1 RETURNING `+agentColumns, agentID, loc.Latitude, loc.Longitude, loc.Provider, loc.Region)
	} else {
		row = s.db.QueryRow(ctx, `SELECT `+agentColumns+` FROM agents a WHERE a.id = $1`, agentID)
	}
	a, err := scanAgent(row)
	if errors.Is(err, pgx.ErrNoRows) {
		return Agent{}, fmt.Errorf("agent %d: %w", agentID, ErrNotFound)
	}
	return a, s.translate(op, err)
}
