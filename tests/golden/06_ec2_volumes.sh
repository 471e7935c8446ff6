# EBS volumes: create (plain, encrypted, by default), describe with filters, modify, delete, errors.
KEY=$(ebsim kms create-key --description "volumes" --query KeyMetadata.KeyId --output text)
ebsim kms create-alias --alias-name alias/vols --target-key-id $KEY
t 'ebsim ec2 create-volume --availability-zone us-east-1a --size 1 --query "[Encrypted, Size, State, VolumeType]" --output text'
t 'ebsim ec2 create-volume --size-bytes 1048576 --encrypted --kms-key-id alias/vols --tag-specifications "ResourceType=volume,Tags=[{Key=Name,Value=db},{Key=team,Value=storage}]"'
t 'ebsim ec2 describe-volumes --filters Name=encrypted,Values=true --query "Volumes[].[VolumeId, KmsKeyId, SizeBytes, Tags[0].Value]" --output text'
t 'ebsim ec2 describe-volumes --filters Name=tag:Name,Values=d? Name=status,Values=available --query "length(Volumes)"'
t 'ebsim ec2 describe-volumes --output table --query "Volumes[?Encrypted].{Id:VolumeId,Size:Size,State:State}"'
t 'ebsim ec2 get-ebs-encryption-by-default'
t 'ebsim ec2 get-ebs-default-kms-key-id'
t 'ebsim ec2 enable-ebs-encryption-by-default'
t 'ebsim ec2 create-volume --size 2 --query "[Encrypted, KmsKeyId]" --output text'
t 'ebsim kms describe-key --key-id alias/aws/ebs --query "KeyMetadata.[KeyManager, Description]" --output text'
t 'ebsim ec2 modify-ebs-default-kms-key-id --kms-key-id alias/vols'
t 'ebsim ec2 create-volume --size 1 --query KmsKeyId --output text'
t 'ebsim ec2 get-ebs-encryption-by-default --region us-west-2 --query EbsEncryptionByDefault'
t 'ebsim ec2 reset-ebs-default-kms-key-id --query KmsKeyId --output text'
t 'ebsim ec2 disable-ebs-encryption-by-default'
VOL=$(ebsim ec2 describe-volumes --filters Name=tag:team,Values=storage --query "Volumes[0].VolumeId" --output text)
t "ebsim ec2 modify-volume --volume-id $VOL --size-bytes 4194304 --query 'VolumeModification.[ModificationState, OriginalSize, TargetSize]' --output text"
t "ebsim ec2 describe-volumes --volume-ids $VOL --query 'Volumes[0].SizeBytes'"
t "ebsim ec2 modify-volume --volume-id $VOL --size-bytes 1048576"
t "ebsim ec2 delete-volume --volume-id $VOL --dry-run"
t "ebsim ec2 delete-volume --volume-id $VOL"
t "ebsim ec2 describe-volumes --volume-ids $VOL"
t 'ebsim ec2 describe-volumes --volume-ids vol-12345'
t 'ebsim ec2 describe-volumes --filters Name=colour,Values=blue'
t 'ebsim ec2 create-volume --size 1 --kms-key-id alias/vols'
t 'ebsim ec2 create-volume --size 1 --availability-zone us-west-2a'
t 'ebsim ec2 create-volume --encrypted'
t 'ebsim ec2 create-volume --size 1 --encrypted --kms-key-id alias/missing'
t 'ebsim ec2 create-volume --size 1 --encrypted --kms-key-id arn:aws:kms:eu-west-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab'
ebsim kms disable-key --key-id $KEY
t 'ebsim ec2 create-volume --size 1 --encrypted --kms-key-id alias/vols'
t 'ebsim ec2 describe-volumes --query "length(Volumes)"'
t "ls \$EBSIM_HOME/regions/us-east-1/volumes | wc -l"
