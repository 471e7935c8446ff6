# Every error prints AWS's line on stderr and exits 254 (service), 252 (usage) or 253 (environment).
KEY=$(ebsim kms create-key --query KeyMetadata.KeyId --output text)
OTHER=$(ebsim kms create-key --query KeyMetadata.KeyId --output text)
ebsim kms create-alias --alias-name alias/app --target-key-id $KEY
printf 'secret' > p.bin
ebsim kms encrypt --key-id $KEY --plaintext fileb://p.bin --encryption-context purpose=test --query CiphertextBlob --output text | base64 --decode > c.bin

# NotFoundException, InvalidArnException
t 'ebsim kms describe-key --key-id not-a-key'
t 'ebsim kms describe-key --key-id 1234abcd-12ab-34cd-56ef-1234567890ab'
t 'ebsim kms describe-key --key-id alias/missing'
t 'ebsim kms describe-key --key-id arn:aws:s3:::my-bucket'
t "ebsim kms enable-key --key-id alias/app"
# InvalidCiphertextException: wrong or missing context, tampering
t 'ebsim kms decrypt --ciphertext-blob fileb://c.bin'
t 'ebsim kms decrypt --ciphertext-blob fileb://c.bin --encryption-context purpose=Test'
t 'ebsim kms decrypt --ciphertext-blob fileb://c.bin --encryption-context purpose=test --output text --query Plaintext | base64 --decode; echo'
# IncorrectKeyException
t "ebsim kms decrypt --ciphertext-blob fileb://c.bin --encryption-context purpose=test --key-id $OTHER"
# ValidationException
head -c 4097 /dev/zero > big.bin
t "ebsim kms encrypt --key-id $KEY --plaintext fileb://big.bin"
t "ebsim kms generate-data-key --key-id $KEY --number-of-bytes 1025"
t "ebsim kms generate-data-key --key-id $KEY"
t "ebsim kms generate-data-key --key-id $KEY --key-spec AES_512"
t "ebsim kms schedule-key-deletion --key-id $OTHER --pending-window-in-days 5"
t "ebsim kms enable-key-rotation --key-id $KEY --rotation-period-in-days 30"
t "ebsim kms generate-random --number-of-bytes 0"
# AlreadyExistsException, InvalidAliasNameException
t "ebsim kms create-alias --alias-name alias/app --target-key-id $OTHER"
t "ebsim kms create-alias --alias-name alias/aws/mine --target-key-id $OTHER"
t "ebsim kms create-alias --alias-name app --target-key-id $OTHER"
# DisabledException, KMSInvalidStateException
t "ebsim kms disable-key --key-id $KEY"
t 'ebsim kms encrypt --key-id alias/app --plaintext fileb://p.bin'
t "ebsim kms schedule-key-deletion --key-id $OTHER --pending-window-in-days 7 --query KeyState"
t "ebsim kms generate-data-key-without-plaintext --key-id $OTHER --key-spec AES_256"
t "ebsim kms cancel-key-deletion --key-id $KEY"
# AccessDeniedException: AWS managed keys are not for direct use
t 'ebsim kms describe-key --key-id alias/aws/ebs --query KeyMetadata.KeyManager'
t 'ebsim kms encrypt --key-id alias/aws/ebs --plaintext fileb://p.bin'
# ValidationException: a key spec other than SYMMETRIC_DEFAULT needs a KeyUsage that fits it
t 'ebsim kms create-key --key-spec RSA_2048'
t 'ebsim kms create-key --key-spec HMAC_256 --key-usage ENCRYPT_DECRYPT'
# UnsupportedOperationException, DryRunOperationException
t 'ebsim kms create-key --key-spec RSA_2048 --key-usage SIGN_VERIFY'
t "ebsim kms enable-key --key-id $KEY"
t "ebsim kms encrypt --key-id $KEY --plaintext fileb://p.bin --dry-run"
# MalformedPolicyDocumentException
t "ebsim kms create-key --policy '{not json'"
# Usage errors (exit 252)
t 'ebsim kms encrypt --key-id alias/app --plaintext "not base64!"'
t 'ebsim kms encrypt --key-id alias/app --plaintext fileb://missing.bin'
t 'ebsim kms encrypt --plaintext fileb://p.bin 2>&1 | head -1'
t 'ebsim kms list-keys --query "Keys[" '
t 'ebsim --region mars-1 kms list-keys'
# Environment errors (exit 253): a corrupt root key is never silently replaced
cp "$EBSIM_HOME/root.key" saved.key
printf 'garbage' > "$EBSIM_HOME/root.key"
t 'ebsim kms list-keys'
rm "$EBSIM_HOME/root.key"
t 'ebsim kms list-keys'
t 'test -e "$EBSIM_HOME/root.key" || echo "no new root key was created"'
cp saved.key "$EBSIM_HOME/root.key"
t 'ebsim kms list-keys --query "length(Keys)"'
